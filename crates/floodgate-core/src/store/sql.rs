//! SQL text both stores share: the job history's statements, the usage
//! report's query, built from the [`GroupBy`] list alone (no caller text
//! reaches the SQL; filter values are bound), and the conversions between
//! Rust and column types.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{BudgetPeriod, GroupBy, JobRecord, StoreError, UsageQuery, UsageRow, UsageTotals};

/// One row of the usage report, read the same way from either store's rows.
pub(super) fn report_row<R>(row: &R, query: &UsageQuery) -> Result<UsageRow, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut usage = UsageRow {
        key_id: None,
        user: None,
        model: None,
        provider: None,
        day: None,
        requests: row.try_get("requests")?,
        errors: row.try_get("errors")?,
        cache_hits: row.try_get("cache_hits")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
    };
    for group in distinct_groups(&query.group_by) {
        let value: Option<String> = row.try_get(group.column())?;
        *usage.group_mut(group) = value;
    }
    Ok(usage)
}

/// One row of the per-model totals, read the same way from either store's rows.
pub(super) fn totals_row<R>(row: &R) -> Result<UsageTotals, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> f64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(UsageTotals {
        model: row.try_get("model")?,
        provider: row.try_get("provider")?,
        requests: row.try_get("requests")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
    })
}

/// Writes a job record; the same SQL on SQLite and PostgreSQL.
pub(super) const PUT_JOB: &str = "INSERT INTO job_history (id, owner, status, finished_at_ms, view) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, \
     status = excluded.status, finished_at_ms = excluded.finished_at_ms, view = excluded.view";
pub(super) const PURGE_JOBS: &str = "DELETE FROM job_history WHERE finished_at_ms < $1";
pub(super) const GET_JOB: &str =
    "SELECT id, owner, status, finished_at_ms, view FROM job_history WHERE id = $1";

/// Binds a job record to [`PUT_JOB`]'s placeholders, for either store.
pub(super) fn bind_job<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    job: &'q JobRecord,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + Type<DB>,
    i64: sqlx::Encode<'q, DB> + Type<DB>,
{
    query
        .bind(job.id.as_str())
        .bind(job.owner.as_deref())
        .bind(job.status.as_str())
        .bind(job.finished_at_ms)
        .bind(job.view.as_str())
}

/// One job history record, read the same way from either store's rows.
pub(super) fn job_row<R>(row: &R) -> Result<JobRecord, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(JobRecord {
        id: row.try_get("id")?,
        owner: row.try_get("owner")?,
        status: row.try_get("status")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        view: row.try_get("view")?,
    })
}

/// The differences between the two SQL dialects that the report needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// A value the report query binds, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Bind<'q> {
    Int(i64),
    Text(&'q str),
}

/// The report query for `query` and the values to bind to it.
#[derive(Debug)]
pub(super) struct ReportSql<'q> {
    pub sql: String,
    pub binds: Vec<Bind<'q>>,
}

impl GroupBy {
    /// The output column (and `UsageRow` field) this group fills.
    pub(super) fn column(self) -> &'static str {
        match self {
            GroupBy::Key => "key_id",
            GroupBy::User => "end_user",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
            GroupBy::Day => "day",
        }
    }

    fn expression(self, dialect: Dialect) -> &'static str {
        match (self, dialect) {
            // Milliseconds divided as a real number: integer division would
            // round times before 1970 towards zero, into the wrong day.
            (GroupBy::Day, Dialect::Sqlite) => "date(at_ms / 1000.0, 'unixepoch')",
            (GroupBy::Day, Dialect::Postgres) => {
                "to_char(to_timestamp(at_ms / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            }
            (group, _) => group.column(),
        }
    }
}

/// Groups in the order asked, each once.
pub(super) fn distinct_groups(group_by: &[GroupBy]) -> Vec<GroupBy> {
    let mut groups = Vec::with_capacity(group_by.len());
    for group in group_by {
        if !groups.contains(group) {
            groups.push(*group);
        }
    }
    groups
}

/// `SELECT <groups>, <sums> FROM usage WHERE <filters> GROUP BY … ORDER BY …`.
///
/// The sums are cast so both databases return the same types: PostgreSQL's
/// `SUM` of a `BIGINT` is a `NUMERIC`, and `SUM` of no rows is `NULL`.
pub(super) fn usage_report<'q>(query: &'q UsageQuery, dialect: Dialect) -> ReportSql<'q> {
    let groups = distinct_groups(&query.group_by);
    let mut binds = Vec::new();
    let mut filters = Vec::new();
    let mut filter = |condition: &str, bind: Bind<'q>| {
        binds.push(bind);
        let placeholder = match dialect {
            Dialect::Sqlite => "?".to_string(),
            Dialect::Postgres => format!("${}", binds.len()),
        };
        filters.push(format!("{condition} {placeholder}"));
    };
    if let Some(from) = query.from_ms {
        filter("at_ms >=", Bind::Int(from));
    }
    if let Some(to) = query.to_ms {
        filter("at_ms <", Bind::Int(to));
    }
    if let Some(key) = &query.key_id {
        filter("key_id =", Bind::Text(key));
    }

    let mut sql = String::from("SELECT ");
    for group in &groups {
        sql.push_str(&format!("{} AS {}, ", group.expression(dialect), group.column()));
    }
    sql.push_str(
        "COUNT(*) AS requests, \
         CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
         CAST(COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0) AS BIGINT) AS cache_hits, \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
         CAST(COALESCE(SUM(cost_usd), 0) AS DOUBLE PRECISION) AS cost_usd \
         FROM usage",
    );
    if !filters.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&filters.join(" AND "));
    }
    if !groups.is_empty() {
        let expressions: Vec<&str> = groups.iter().map(|g| g.expression(dialect)).collect();
        sql.push_str(" GROUP BY ");
        sql.push_str(&expressions.join(", "));
        // The same order in both databases: byte order (PostgreSQL would
        // otherwise use the database's locale) and records without a key
        // or user first (SQLite's default).
        let order: Vec<String> = expressions
            .iter()
            .map(|e| match dialect {
                Dialect::Sqlite => format!("{e} NULLS FIRST"),
                Dialect::Postgres => format!("{e} COLLATE \"C\" NULLS FIRST"),
            })
            .collect();
        sql.push_str(" ORDER BY ");
        sql.push_str(&order.join(", "));
    }
    ReportSql { sql, binds }
}

/// A `u32` field read back from a 64-bit column.
pub(super) fn to_u32(value: i64, column: &str) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::Invalid(format!("{column} holds {value}, not a u32")))
}

/// A field kept as JSON text.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
    column: &str,
) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Invalid(format!("{column} cannot be written as JSON: {e}")))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Invalid(format!("{column} holds invalid JSON: {e}")))
}

pub(super) fn to_budget_period(text: &str) -> Result<BudgetPeriod, StoreError> {
    BudgetPeriod::parse(text)
        .ok_or_else(|| StoreError::Invalid(format!("budget_period holds {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_sql_holds_only_placeholders_for_the_callers_values() {
        let query = UsageQuery {
            from_ms: Some(5),
            to_ms: None,
            group_by: vec![GroupBy::Day, GroupBy::Key, GroupBy::Day],
            key_id: Some("x'; DROP TABLE usage; --".into()),
        };
        let report = usage_report(&query, Dialect::Postgres);
        assert!(!report.sql.contains("DROP"));
        assert!(report.sql.contains("at_ms >= $1 AND key_id = $2"));
        assert_eq!(report.binds, vec![Bind::Int(5), Bind::Text("x'; DROP TABLE usage; --")]);
        assert_eq!(report.sql.matches(" AS day").count(), 1);
        let report = usage_report(&query, Dialect::Sqlite);
        assert!(report.sql.contains("at_ms >= ? AND key_id = ?"));
    }
}
