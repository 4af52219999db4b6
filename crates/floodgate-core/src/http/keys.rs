//! Virtual keys and usage, for the master key: `POST /admin/keys`,
//! `GET /admin/keys`, `GET|PATCH|DELETE /admin/keys/{id}` and
//! `GET /admin/usage`.
//!
//! A key is shown once, in the answer that creates it; the store keeps only
//! its SHA-256. Every write goes to the store first, then into this node's
//! key registry at once; other nodes see it at their next sync.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use floodgate_protocol::Format;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{ApiError, json_response, read_body, respond};
use crate::app::AppState;
use crate::pipeline::observe::RouteInfo;
use crate::store::{BudgetPeriod, GroupBy, UsageQuery, VirtualKey};
use crate::time;

const SCOPES: &[&str] = &[crate::realtime::PUBLISH_SCOPE];

/// The most room patterns one key may list.
const MAX_ROOMS: usize = 100;
/// The longest room pattern, in characters.
const MAX_ROOM_PATTERN: usize = crate::realtime::MAX_NAME;
/// What a room pattern may be made of, for the messages that refuse one.
const ROOM_CHARACTERS: &str =
    "A-Z a-z 0-9 _ - . : @ and * (any run of characters), e.g. \"team-42-*\"";

/// `Some(None)` for an explicit `null`, `None` when absent.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Ok(Some(Option::deserialize(d)?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFields {
    name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "nullable")]
    rpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    tpm: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    max_concurrent: Option<Option<u32>>,
    #[serde(default, deserialize_with = "nullable")]
    max_budget_usd: Option<Option<f64>>,
    budget_period: Option<BudgetPeriod>,
    metadata: Option<Value>,
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    rooms: Option<Option<Vec<String>>>,
    /// RFC 3339, e.g. `2027-01-01T00:00:00Z`.
    #[serde(default, deserialize_with = "nullable")]
    expires_at: Option<Option<String>>,
}

fn parse_fields(bytes: &[u8]) -> Result<KeyFields, ApiError> {
    super::parse_json(
        bytes,
        "key",
        "valid fields: name, models, rpm, tpm, max_concurrent, max_budget_usd, \
         budget_period (day|month|total), metadata, scopes, rooms, expires_at",
    )
}

/// Applies `fields` to `key`, checking each.
fn apply(app: &AppState, key: &mut VirtualKey, fields: KeyFields) -> Result<(), ApiError> {
    let invalid = |message: String| ApiError::Invalid { message };
    if let Some(name) = fields.name {
        let name = name.trim().to_string();
        if name.is_empty() || name.len() > 200 {
            return Err(invalid("name must be 1 to 200 characters".into()));
        }
        key.name = name;
    }
    if let Some(models) = fields.models {
        if let Some(list) = &models {
            for model in list {
                if app.router.resolve(model).is_err() {
                    return Err(invalid(format!(
                        "models: {model:?} is not a model alias; valid: {}",
                        app.router.model_names().join(", ")
                    )));
                }
            }
        }
        key.models = models;
    }
    let at_least_one = |what: &str, v: Option<u32>| match v {
        Some(0) => Err(invalid(format!("{what} must be at least 1, or null for no limit"))),
        v => Ok(v),
    };
    if let Some(rpm) = fields.rpm {
        key.rpm = at_least_one("rpm", rpm)?;
    }
    if let Some(tpm) = fields.tpm {
        key.tpm = at_least_one("tpm", tpm)?;
    }
    if let Some(max) = fields.max_concurrent {
        key.max_concurrent = at_least_one("max_concurrent", max)?;
    }
    if let Some(budget) = fields.max_budget_usd {
        if let Some(usd) = budget
            && (!usd.is_finite() || usd <= 0.0)
        {
            return Err(invalid(format!(
                "max_budget_usd must be a number of dollars above 0 (or null for no budget); got {usd}"
            )));
        }
        key.max_budget_usd = budget;
    }
    if let Some(period) = fields.budget_period {
        key.budget_period = period;
    }
    if let Some(metadata) = fields.metadata {
        if !metadata.is_object() {
            return Err(invalid(
                "metadata must be a JSON object, e.g. {\"user\": \"u_123\"}".into(),
            ));
        }
        key.metadata = metadata;
    }
    if let Some(scopes) = fields.scopes {
        if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(invalid(format!(
                "scopes: {bad:?} is not a scope; valid: {}",
                SCOPES.join(", ")
            )));
        }
        key.scopes = scopes;
    }
    if let Some(rooms) = fields.rooms {
        if let Some(list) = &rooms {
            check_rooms(list).map_err(invalid)?;
        }
        key.rooms = rooms;
    }
    if let Some(expires) = fields.expires_at {
        key.expires_at_ms = match expires {
            None => None,
            Some(text) => Some(time::parse(&text).ok_or_else(|| {
                invalid(format!(
                    "expires_at {text:?} is not a time such as \"2027-01-01T00:00:00Z\" (RFC 3339, UTC)"
                ))
            })?),
        };
    }
    Ok(())
}

/// A key's room patterns: at most [`MAX_ROOMS`], each 1 to
/// [`MAX_ROOM_PATTERN`] of [`ROOM_CHARACTERS`]. An empty list is fine: that
/// key may use no room.
fn check_rooms(rooms: &[String]) -> Result<(), String> {
    if rooms.len() > MAX_ROOMS {
        return Err(format!(
            "rooms: {} patterns is too many; valid: at most {MAX_ROOMS}, or null for every room",
            rooms.len()
        ));
    }
    for (i, pattern) in rooms.iter().enumerate() {
        // Counted before the characters are checked, so a long pattern is
        // not echoed back whole.
        let length = pattern.chars().count();
        if !(1..=MAX_ROOM_PATTERN).contains(&length) {
            return Err(format!(
                "rooms[{i}] is {length} characters long; valid: 1 to {MAX_ROOM_PATTERN} \
                 characters from {ROOM_CHARACTERS}"
            ));
        }
        if let Some(bad) = pattern.chars().find(|c| !crate::realtime::pattern_char(*c)) {
            return Err(format!(
                "rooms[{i}]: {pattern:?} holds {bad:?}; valid: 1 to {MAX_ROOM_PATTERN} \
                 characters from {ROOM_CHARACTERS}"
            ));
        }
    }
    Ok(())
}

fn view(key: &VirtualKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "models": key.models,
        "rpm": key.rpm,
        "tpm": key.tpm,
        "max_concurrent": key.max_concurrent,
        "max_budget_usd": key.max_budget_usd,
        "budget_period": key.budget_period.as_str(),
        "metadata": key.metadata,
        "scopes": key.scopes,
        "rooms": key.rooms,
        "expires_at": key.expires_at_ms.map(time::rfc3339),
        "created_at": time::rfc3339(key.created_at_ms),
        "updated_at": time::rfc3339(key.updated_at_ms),
        "revoked_at": key.revoked_at_ms.map(time::rfc3339),
    })
}

fn store_error(error: crate::store::StoreError) -> ApiError {
    tracing::error!(%error, "admin: the database failed");
    ApiError::Unavailable { what: "the database", message: "try again shortly".into() }
}

fn admin(result: Result<Response, ApiError>) -> Response {
    respond(result, Format::OpenAi, RouteInfo::default())
}

pub async fn create_key(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let bytes = read_body(body, &headers, 64 * 1024).await?;
        let fields = parse_fields(&bytes)?;
        if fields.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(ApiError::Invalid {
                message: "name is required, e.g. {\"name\": \"my-app\"}".into(),
            });
        }
        let (secret, id) = crate::keys::generate().map_err(|_| ApiError::Unavailable {
            what: "the system random number generator",
            message: "try again".into(),
        })?;
        let now = time::now_ms();
        let mut key = VirtualKey {
            id,
            name: String::new(),
            hash: crate::keys::hash_key(&secret),
            prefix: crate::keys::display_prefix(&secret),
            models: None,
            rpm: None,
            tpm: None,
            max_concurrent: None,
            max_budget_usd: None,
            budget_period: BudgetPeriod::Total,
            metadata: json!({}),
            scopes: Vec::new(),
            rooms: None,
            expires_at_ms: None,
            created_at_ms: now,
            updated_at_ms: now,
            revoked_at_ms: None,
            seq: 0,
        };
        apply(&app, &mut key, fields)?;
        let stored = app.store.put_key(&key).await.map_err(store_error)?;
        let mut body = view(&stored);
        body["key"] = Value::String(secret);
        app.keys.apply(vec![stored]);
        let mut response = json_response(body.to_string().into_bytes());
        *response.status_mut() = StatusCode::CREATED;
        Ok(response)
    }
    .await;
    admin(result)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    include_revoked: bool,
}

pub async fn list_keys(
    State(app): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(query) = query.map_err(|e| ApiError::Invalid {
            message: format!("{}; valid: include_revoked=true|false", e.body_text()),
        })?;
        let keys = app.store.list_keys().await.map_err(store_error)?;
        let list: Vec<Value> = keys
            .iter()
            .filter(|k| query.include_revoked || k.revoked_at_ms.is_none())
            .map(view)
            .collect();
        Ok(json_response(json!({ "keys": list }).to_string().into_bytes()))
    }
    .await;
    admin(result)
}

async fn find(app: &AppState, id: &str) -> Result<VirtualKey, ApiError> {
    app.store.get_key(id).await.map_err(store_error)?.ok_or_else(|| ApiError::NotFound {
        what: "key",
        name: id.to_string(),
        known: vec!["GET /admin/keys lists the ids".into()],
    })
}

pub async fn get_key(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let key = find(&app, &id).await?;
        let now = time::now_ms();
        let from = match key.budget_period {
            BudgetPeriod::Day => time::day_start(now),
            BudgetPeriod::Month => time::month_start(now),
            BudgetPeriod::Total => 0,
        };
        let spent = app.store.key_spend(&key.id, from).await.map_err(store_error)?;
        let mut body = view(&key);
        body["spent_usd"] = json!(spent);
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    admin(result)
}

pub async fn update_key(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let bytes = read_body(body, &headers, 64 * 1024).await?;
        let fields = parse_fields(&bytes)?;
        let mut key = find(&app, &id).await?;
        if key.revoked_at_ms.is_some() {
            return Err(ApiError::Invalid {
                message: format!("key {id} is revoked; create a new key instead"),
            });
        }
        apply(&app, &mut key, fields)?;
        key.updated_at_ms = time::now_ms();
        let stored = app.store.put_key(&key).await.map_err(store_error)?;
        let body = view(&stored);
        app.keys.apply(vec![stored]);
        Ok(json_response(body.to_string().into_bytes()))
    }
    .await;
    admin(result)
}

pub async fn revoke_key(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let mut key = find(&app, &id).await?;
        if key.revoked_at_ms.is_none() {
            let now = time::now_ms();
            key.revoked_at_ms = Some(now);
            key.updated_at_ms = now;
            key = app.store.put_key(&key).await.map_err(store_error)?;
            app.keys.apply(vec![key.clone()]);
        }
        Ok(json_response(
            json!({ "id": key.id, "revoked": true, "revoked_at": key.revoked_at_ms.map(time::rfc3339) })
                .to_string()
                .into_bytes(),
        ))
    }
    .await;
    admin(result)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
    key_id: Option<String>,
}

pub async fn usage(
    State(app): State<AppState>,
    query: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let valid = "valid parameters: from, to (RFC 3339 or YYYY-MM-DD, UTC; to is exclusive), \
                     group_by (comma-separated: key, user, model, provider, day), key_id";
        let Query(params) = query
            .map_err(|e| ApiError::Invalid { message: format!("{}; {valid}", e.body_text()) })?;
        let time_param = |name: &str, text: &Option<String>| -> Result<Option<i64>, ApiError> {
            match text {
                None => Ok(None),
                Some(t) => time::parse(t).map(Some).ok_or_else(|| ApiError::Invalid {
                    message: format!(
                        "{name}={t:?} is not a time such as 2026-12-01 or 2026-12-01T10:00:00Z"
                    ),
                }),
            }
        };
        let from_ms = time_param("from", &params.from)?;
        let to_ms = time_param("to", &params.to)?;
        let mut group_by = Vec::new();
        for name in params.group_by.as_deref().unwrap_or("key,model").split(',') {
            let group = match name.trim() {
                "" => continue,
                "key" => GroupBy::Key,
                "user" => GroupBy::User,
                "model" => GroupBy::Model,
                "provider" => GroupBy::Provider,
                "day" => GroupBy::Day,
                other => {
                    return Err(ApiError::Invalid {
                        message: format!(
                            "group_by: {other:?} is not a grouping; valid: key, user, model, provider, day"
                        ),
                    });
                }
            };
            if !group_by.contains(&group) {
                group_by.push(group);
            }
        }
        let query = UsageQuery { from_ms, to_ms, group_by, key_id: params.key_id };
        let rows = app.store.usage_report(&query).await.map_err(store_error)?;
        let names: HashMap<String, String> = if query.group_by.contains(&GroupBy::Key) {
            let keys = app.store.list_keys().await.map_err(store_error)?;
            keys.into_iter().map(|k| (k.id, k.name)).collect()
        } else {
            HashMap::new()
        };
        let mut totals = json!({"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0});
        let (mut requests, mut errors, mut input, mut output, mut cost) = (0i64, 0i64, 0i64, 0i64, 0f64);
        let rows: Vec<Value> = rows
            .iter()
            .map(|row| {
                requests += row.requests;
                errors += row.errors;
                input += row.input_tokens;
                output += row.output_tokens;
                cost += row.cost_usd;
                let mut value = serde_json::to_value(row).unwrap_or_default();
                if let Some(id) = &row.key_id
                    && let Some(name) = names.get(id)
                {
                    value["key_name"] = Value::String(name.clone());
                }
                value
            })
            .collect();
        totals["requests"] = json!(requests);
        totals["errors"] = json!(errors);
        totals["input_tokens"] = json!(input);
        totals["output_tokens"] = json!(output);
        totals["cost_usd"] = json!(cost);
        let group_names: Vec<&str> = query
            .group_by
            .iter()
            .map(|g| match g {
                GroupBy::Key => "key",
                GroupBy::User => "user",
                GroupBy::Model => "model",
                GroupBy::Provider => "provider",
                GroupBy::Day => "day",
            })
            .collect();
        let body = json!({
            "from": from_ms.map(time::rfc3339),
            "to": to_ms.map(time::rfc3339),
            "group_by": group_names,
            "rows": rows,
            "totals": totals,
        });
        Ok(json_response(body.to_string().into_bytes()).into_response())
    }
    .await;
    admin(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_patterns_are_checked_at_their_bounds() {
        let patterns = |n: usize, pattern: &str| vec![pattern.to_string(); n];
        for fine in [
            vec![],
            patterns(MAX_ROOMS, "room"),
            patterns(1, &"a".repeat(MAX_ROOM_PATTERN)),
            vec!["*".into(), "team-42-*".into(), "Org_1.chat:general@eu".into()],
        ] {
            assert_eq!(check_rooms(&fine), Ok(()), "{fine:?}");
        }
        for (bad, expected) in [
            (patterns(MAX_ROOMS + 1, "room"), "101 patterns"),
            (patterns(1, &"a".repeat(MAX_ROOM_PATTERN + 1)), "rooms[0] is 129 characters"),
            (vec!["ok".into(), String::new()], "rooms[1] is 0 characters"),
            (patterns(1, "team 42"), "holds ' '"),
            (patterns(1, "team/42"), "holds '/'"),
            (patterns(1, "équipe"), "holds 'é'"),
        ] {
            let message = check_rooms(&bad).unwrap_err();
            assert!(message.starts_with("rooms"), "{message}");
            assert!(message.contains(expected), "{message:?} should say {expected:?}");
        }
    }
}
