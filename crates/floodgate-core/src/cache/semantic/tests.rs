use super::*;

const NOW: u64 = 1_000_000;
const LATER: u64 = NOW + 60_000;

fn digest(n: u8) -> Digest {
    [n; 32]
}

/// A digest from a counter, for many distinct keys.
fn numbered(n: u64) -> Digest {
    let mut digest = [0u8; 32];
    digest[..8].copy_from_slice(&n.to_le_bytes());
    digest
}

fn entry(alias: &str, context: Digest, vector: &[f32], answer_key: Digest) -> SemanticEntry {
    SemanticEntry {
        alias: alias.to_string(),
        context,
        vector: vector.to_vec(),
        answer_key,
        expires_at_ms: LATER,
    }
}

fn random_vector(rng: &mut fastrand::Rng, dimensions: usize) -> Vec<f32> {
    (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

/// `vector` turned by a small angle towards a random direction, so the two
/// have cosine similarity about `1 / sqrt(1 + epsilon² · |noise|²)`.
fn nudged(rng: &mut fastrand::Rng, vector: &[f32], epsilon: f32) -> Vec<f32> {
    let norm = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
    vector.iter().map(|v| v / norm + epsilon * (rng.f32() * 2.0 - 1.0)).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
}

#[test]
fn the_index_and_the_store_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + fmt::Debug>() {}
    shared::<SemanticIndex>();
    shared::<SemanticStore>();
    assert_eq!(
        format!("{:?}", SemanticIndex::new(5)),
        "SemanticIndex { max_entries: 5, len: 0, partitions: 0, graphs: 0 }"
    );
}

#[test]
fn a_close_vector_in_the_same_context_is_a_hit() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0, 0.0], digest(10)));
    let (key, similarity) = index.nearest(&digest(1), &[0.98, 0.1, 0.0], 0.95, NOW).unwrap();
    assert_eq!(key, digest(10));
    assert!((similarity - cosine(&[1.0, 0.0, 0.0], &[0.98, 0.1, 0.0])).abs() < 1e-5);
    // Lengths do not matter: vectors are normalised.
    let (_, similarity) = index.nearest(&digest(1), &[50.0, 0.0, 0.0], 0.95, NOW).unwrap();
    assert!((similarity - 1.0).abs() < 1e-6, "{similarity}");
}

#[test]
fn a_vector_below_the_threshold_is_a_miss() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    // cos 45° ≈ 0.707.
    assert_eq!(index.nearest(&digest(1), &[1.0, 1.0], 0.95, NOW), None);
    assert!(index.nearest(&digest(1), &[1.0, 1.0], 0.7, NOW).is_some());
    assert_eq!(index.nearest(&digest(1), &[-1.0, 0.0], 0.95, NOW), None);
}

#[test]
fn the_best_of_several_is_returned() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.2], digest(10)));
    index.insert(entry("gpt", digest(1), &[1.0, 0.05], digest(11)));
    index.insert(entry("gpt", digest(1), &[1.0, -0.1], digest(12)));
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0], 0.9, NOW).unwrap().0, digest(11));
}

#[test]
fn another_context_never_matches() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    assert_eq!(index.nearest(&digest(2), &[1.0, 0.0], 0.95, NOW), None);
    assert!(index.nearest(&digest(1), &[1.0, 0.0], 0.95, NOW).is_some());
}

#[test]
fn a_vector_of_another_length_never_matches() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0, 0.0], 0.0, NOW), None);
    assert_eq!(index.nearest(&digest(1), &[1.0], 0.0, NOW), None);
}

#[test]
fn zero_empty_and_non_finite_vectors_are_never_kept_nor_matched() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[], digest(10)));
    index.insert(entry("gpt", digest(1), &[0.0, 0.0], digest(11)));
    index.insert(entry("gpt", digest(1), &[f32::NAN, 1.0], digest(12)));
    assert!(index.is_empty());
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(13)));
    assert_eq!(index.nearest(&digest(1), &[0.0, 0.0], -1.0, NOW), None);
    assert_eq!(index.nearest(&digest(1), &[], -1.0, NOW), None);
    assert_eq!(index.nearest(&digest(1), &[f32::INFINITY, 0.0], -1.0, NOW), None);
    // An unusable replacement still removes the entry it replaces.
    index.insert(entry("gpt", digest(1), &[0.0, 0.0], digest(13)));
    assert!(index.is_empty());
}

#[test]
fn an_expired_entry_is_never_returned() {
    let index = SemanticIndex::new(10);
    let mut expiring = entry("gpt", digest(1), &[1.0, 0.0], digest(10));
    expiring.expires_at_ms = NOW + 5;
    index.insert(expiring);
    assert!(index.nearest(&digest(1), &[1.0, 0.0], 0.95, NOW + 4).is_some());
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0], 0.95, NOW + 5), None);
    // A live entry further away is found instead of the expired one.
    index.insert(entry("gpt", digest(1), &[1.0, 0.1], digest(11)));
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0], 0.95, NOW + 5).unwrap().0, digest(11));
}

#[test]
fn the_same_answer_key_replaces_the_entry() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    index.insert(entry("gpt", digest(2), &[0.0, 1.0], digest(10)));
    assert_eq!(index.len(), 1);
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0], 0.5, NOW), None);
    assert_eq!(index.nearest(&digest(2), &[0.0, 1.0], 0.95, NOW).unwrap().0, digest(10));
}

#[test]
fn remove_forgets_the_entry() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    index.insert(entry("gpt", digest(1), &[0.0, 1.0], digest(11)));
    index.remove(&digest(10));
    index.remove(&digest(99));
    assert_eq!(index.len(), 1);
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0], 0.5, NOW), None);
    index.remove(&digest(11));
    assert!(index.is_empty());
}

#[test]
fn clear_by_alias_removes_only_that_alias() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    index.insert(entry("gpt", digest(2), &[1.0, 0.0], digest(11)));
    index.insert(entry("claude", digest(3), &[1.0, 0.0], digest(12)));
    assert_eq!(index.len_by_alias(), vec![("claude".to_string(), 1), ("gpt".to_string(), 2)]);
    assert_eq!(index.clear(Some("gpt")), 2);
    assert_eq!(index.clear(Some("nobody")), 0);
    assert_eq!(index.len_by_alias(), vec![("claude".to_string(), 1)]);
    assert_eq!(index.nearest(&digest(1), &[1.0, 0.0], 0.5, NOW), None);
    assert!(index.nearest(&digest(3), &[1.0, 0.0], 0.5, NOW).is_some());
    assert_eq!(index.clear(None), 1);
    assert!(index.is_empty());
    assert!(index.len_by_alias().is_empty());
    // Usable after a full clear.
    index.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    assert!(index.nearest(&digest(1), &[1.0, 0.0], 0.5, NOW).is_some());
}

/// The `n`th unit vector of 16 dimensions.
fn axis(n: u8) -> Vec<f32> {
    (0..16).map(|i| if i == n % 16 { 1.0 } else { 0.0 }).collect()
}

#[test]
fn over_capacity_the_entry_expiring_soonest_is_evicted() {
    let index = SemanticIndex::new(3);
    let insert = |n: u8, expires_at_ms: u64| {
        index
            .insert(SemanticEntry { expires_at_ms, ..entry("gpt", digest(1), &axis(n), digest(n)) })
    };
    let found = |n: u8| index.nearest(&digest(1), &axis(n), 0.99, NOW).map(|(key, _)| key);
    insert(0, LATER + 3);
    insert(1, LATER + 1);
    insert(2, LATER + 2);
    insert(3, LATER + 4);
    assert_eq!(index.len(), 3);
    assert_eq!(found(1), None);
    for n in [0, 2, 3] {
        assert_eq!(found(n), Some(digest(n)));
    }
    // A newcomer expiring before all the others is the one to go.
    insert(4, NOW + 1);
    assert_eq!(index.len(), 3);
    assert_eq!(found(4), None);
    // Replacing an entry does not evict another.
    insert(2, LATER + 5);
    assert_eq!((found(0), found(2), found(3)), (Some(digest(0)), Some(digest(2)), Some(digest(3))));

    let nothing = SemanticIndex::new(0);
    nothing.insert(entry("gpt", digest(1), &[1.0, 0.0], digest(10)));
    assert!(nothing.is_empty());
}

#[test]
fn a_partition_grows_a_graph_and_drops_it_again() {
    let mut rng = fastrand::Rng::with_seed(3);
    let index = SemanticIndex::new(10_000);
    let vectors: Vec<Vec<f32>> = (0..200).map(|_| random_vector(&mut rng, 32)).collect();
    for (n, vector) in vectors.iter().enumerate() {
        index.insert(entry("gpt", digest(1), vector, numbered(n as u64)));
    }
    // The same vectors under another context are never answers in ours.
    for (n, vector) in vectors.iter().enumerate().take(100) {
        index.insert(entry("gpt", digest(2), vector, numbered(1000 + n as u64)));
    }
    let has_graph = |context: Digest| {
        index.read().partitions.get(&(context, 32)).is_some_and(|p| p.graph.is_some())
    };
    assert!(has_graph(digest(1)));
    assert!(has_graph(digest(2)));
    for n in (0..200).step_by(7) {
        let query = nudged(&mut rng, &vectors[n], 0.01);
        let (key, similarity) = index.nearest(&digest(1), &query, 0.95, NOW).unwrap();
        assert_eq!(key, numbered(n as u64));
        assert!(similarity > 0.99, "{similarity}");
    }
    // Removing down to FLAT_AGAIN drops the graph; what is left is found.
    for n in 0..(200 - FLAT_AGAIN) {
        index.remove(&numbered(n as u64));
    }
    assert!(!has_graph(digest(1)));
    for (n, vector) in vectors.iter().enumerate().skip(200 - FLAT_AGAIN) {
        assert_eq!(index.nearest(&digest(1), vector, 0.99, NOW).unwrap().0, numbered(n as u64));
    }
    assert_eq!(index.nearest(&digest(1), &vectors[0], 0.99, NOW), None);
    assert_eq!(index.len(), FLAT_AGAIN + 100);
}

#[test]
fn a_graph_far_larger_than_its_partition_is_rebuilt() {
    let mut rng = fastrand::Rng::with_seed(4);
    let index = SemanticIndex::new(10_000);
    let vectors: Vec<Vec<f32>> = (0..1000).map(|_| random_vector(&mut rng, 16)).collect();
    for (n, vector) in vectors.iter().enumerate() {
        index.insert(entry("gpt", digest(1), vector, numbered(n as u64)));
    }
    let capacity =
        || index.read().partitions[&(digest(1), 16)].graph.as_ref().map(|graph| graph.capacity());
    assert!(capacity().unwrap() >= 1000);
    for n in 0..800 {
        index.remove(&numbered(n));
    }
    assert!(capacity().unwrap() <= 4 * 200, "{:?}", capacity());
    for (n, vector) in vectors.iter().enumerate().skip(800) {
        assert_eq!(index.nearest(&digest(1), vector, 0.99, NOW).unwrap().0, numbered(n as u64));
    }
    // Removed entries are gone from the rebuilt graph too.
    assert_eq!(index.nearest(&digest(1), &vectors[0], 0.99, NOW), None);
}

#[test]
fn huge_and_tiny_components_normalise() {
    let index = SemanticIndex::new(10);
    index.insert(entry("gpt", digest(1), &[3e38, 3e38], digest(10)));
    let (key, similarity) = index.nearest(&digest(1), &[1e-40, 1e-40], 0.99, NOW).unwrap();
    assert_eq!(key, digest(10));
    assert!((similarity - 1.0).abs() < 1e-6, "{similarity}");
}

#[test]
fn an_expired_entry_in_a_graph_is_skipped_for_a_live_one() {
    let mut rng = fastrand::Rng::with_seed(5);
    let index = SemanticIndex::new(10_000);
    let target = random_vector(&mut rng, 32);
    let mut expired = entry("gpt", digest(1), &target, digest(1));
    expired.expires_at_ms = NOW;
    index.insert(expired);
    let close = nudged(&mut rng, &target, 0.02);
    index.insert(entry("gpt", digest(1), &close, digest(2)));
    for n in 0..300 {
        index.insert(entry("gpt", digest(1), &random_vector(&mut rng, 32), numbered(10 + n)));
    }
    let (key, similarity) = index.nearest(&digest(1), &target, 0.9, NOW).unwrap();
    assert_eq!(key, digest(2));
    assert!((similarity - cosine(&target, &close)).abs() < 1e-4);
}

/// Each of 200 of 10,000 random 64-dimensional vectors, all in one context
/// (one HNSW graph), finds itself.
#[test]
fn ten_thousand_random_vectors_each_find_themselves() {
    let mut rng = fastrand::Rng::with_seed(7);
    let index = SemanticIndex::new(10_000);
    let vectors: Vec<Vec<f32>> = (0..10_000).map(|_| random_vector(&mut rng, 64)).collect();
    for (n, vector) in vectors.iter().enumerate() {
        index.insert(entry("gpt", digest(1), vector, numbered(n as u64)));
    }
    assert_eq!(index.len(), 10_000);
    for n in (0..10_000).step_by(50) {
        let (key, similarity) = index.nearest(&digest(1), &vectors[n], 0.95, NOW).unwrap();
        assert_eq!(key, numbered(n as u64));
        assert!((similarity - 1.0).abs() < 1e-5, "{similarity}");
    }
}

#[test]
fn lookups_run_from_many_threads_at_once() {
    let mut rng = fastrand::Rng::with_seed(9);
    let index = SemanticIndex::new(10_000);
    let vectors: Vec<Vec<f32>> = (0..500).map(|_| random_vector(&mut rng, 16)).collect();
    for (n, vector) in vectors.iter().enumerate() {
        index.insert(entry("gpt", digest(1), vector, numbered(n as u64)));
    }
    // More threads than the graph has search slots: the rest scan exactly.
    std::thread::scope(|scope| {
        for t in 0..16 {
            let (index, vectors) = (&index, &vectors);
            scope.spawn(move || {
                for n in (t..500).step_by(16) {
                    let found = index.nearest(&digest(1), &vectors[n], 0.99, NOW).unwrap();
                    assert_eq!(found.0, numbered(n as u64));
                }
            });
        }
    });
}

#[test]
fn values_encode_and_decode() {
    let e = SemanticEntry {
        alias: "a:b".to_string(),
        context: digest(1),
        vector: vec![0.5, -1.25, 3.0],
        answer_key: digest(2),
        expires_at_ms: 1_234_567_890_123,
    };
    let bytes = encode(&e);
    assert_eq!(bytes.len(), HEADER + 12);
    assert_eq!(decode("a:b", &bytes), Some(e));
    assert_eq!(decode("a", &bytes[..HEADER - 1]), None);
    assert_eq!(decode("a", &bytes[..HEADER + 3]), None);
    assert_eq!(decode("a", &[]), None);
    let mut other_version = bytes.clone();
    other_version[0] = 2;
    assert_eq!(decode("a", &other_version), None);
    let mut nan = bytes;
    nan[HEADER..HEADER + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(decode("a", &nan), None);
}

#[test]
fn digests_round_trip_through_hex_and_globs_are_escaped() {
    let d: Digest = std::array::from_fn(|i| (i * 37) as u8);
    assert_eq!(hex(&d).len(), 64);
    assert_eq!(unhex(&hex(&d)), Some(d));
    assert_eq!(unhex(&hex(&d).to_uppercase()), Some(d));
    assert_eq!(unhex(&"g".repeat(64)), None);
    assert_eq!(unhex("00"), None);
    assert_eq!(glob_escape(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
}

/// A store under a prefix of its own, or `None` when
/// `FLOODGATE_TEST_REDIS_URL` is not set (the test then passes vacuously, as
/// the limiter's Redis tests do).
async fn store() -> Option<(SemanticStore, redis::aio::ConnectionManager)> {
    let url = std::env::var("FLOODGATE_TEST_REDIS_URL").ok()?;
    let prefix = format!("floodgate-test:{}:", uuid::Uuid::new_v4().simple());
    let connection = redis::Client::open(url).unwrap().get_connection_manager().await.unwrap();
    Some((SemanticStore::new(connection.clone(), &prefix), connection))
}

fn now_ms() -> u64 {
    u64::try_from(crate::time::now_ms()).unwrap()
}

#[tokio::test]
async fn the_store_saves_loads_removes_and_clears() {
    let Some((store, mut connection)) = store().await else { return };
    let later = now_ms() + 600_000;
    let mut entries: Vec<SemanticEntry> = (0..5u8)
        .map(|n| SemanticEntry {
            alias: if n < 3 { "gpt".to_string() } else { "a:b".to_string() },
            context: digest(n),
            vector: vec![f32::from(n), 0.5, -0.25],
            answer_key: digest(100 + n),
            expires_at_ms: later + u64::from(n),
        })
        .collect();
    for e in &entries {
        store.save(e).await.unwrap();
    }
    // An entry already expired is not kept.
    let mut gone = entries[0].clone();
    gone.answer_key = digest(99);
    gone.expires_at_ms = now_ms() - 1000;
    store.save(&gone).await.unwrap();
    // A malformed value and a key that is not an entry's are skipped.
    let _: () = redis::cmd("SET")
        .arg(format!("{}semantic:gpt:{}", store.prefix, hex(&digest(50))))
        .arg(&b"\x01garbage"[..])
        .arg("PX")
        .arg(600_000)
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{}semantic:gpt:nothex", store.prefix))
        .arg(encode(&entries[0]))
        .arg("PX")
        .arg(600_000)
        .query_async(&mut connection)
        .await
        .unwrap();

    let mut loaded = store.load_all().await.unwrap();
    loaded.sort_by_key(|e| e.answer_key);
    assert_eq!(loaded, entries);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(store.key("gpt", &digest(100)))
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!((590_000..=600_000).contains(&ttl), "{ttl}");

    store.remove("gpt", &digest(100)).await.unwrap();
    entries.remove(0);
    let mut loaded = store.load_all().await.unwrap();
    loaded.sort_by_key(|e| e.answer_key);
    assert_eq!(loaded, entries);

    // `a` is neither `a:b` nor a glob; the malformed value is gpt's too.
    assert_eq!(store.clear(Some("a")).await.unwrap(), 0);
    assert_eq!(store.clear(Some("*")).await.unwrap(), 0);
    assert_eq!(store.clear(Some("gpt")).await.unwrap(), 3);
    let loaded = store.load_all().await.unwrap();
    assert_eq!(loaded.iter().map(|e| e.alias.as_str()).collect::<Vec<_>>(), ["a:b", "a:b"]);
    // The rest, and the key that was not an entry's.
    assert_eq!(store.clear(None).await.unwrap(), 3);
    assert!(store.load_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_store_loads_more_than_one_scan_page() {
    let Some((store, _)) = store().await else { return };
    let later = now_ms() + 600_000;
    let mut entries: Vec<SemanticEntry> = (0..2500u64)
        .map(|n| SemanticEntry {
            alias: "gl*b?[x]".to_string(),
            context: numbered(n),
            vector: vec![1.0; 8],
            answer_key: numbered(n),
            expires_at_ms: later,
        })
        .collect();
    let saves = entries.iter().map(|e| store.save(e));
    for result in futures_util::future::join_all(saves).await {
        result.unwrap();
    }
    let mut loaded = store.load_all().await.unwrap();
    loaded.sort_by_key(|e| e.answer_key);
    entries.sort_by_key(|e| e.answer_key);
    assert_eq!(loaded, entries);
    // The index warms up from what was loaded.
    let index = SemanticIndex::new(10_000);
    for e in loaded {
        index.insert(e);
    }
    assert_eq!(index.len_by_alias(), vec![("gl*b?[x]".to_string(), 2500)]);
    assert_eq!(store.clear(Some("gl*b?[x]")).await.unwrap(), 2500);
    assert_eq!(store.clear(None).await.unwrap(), 0);
}
