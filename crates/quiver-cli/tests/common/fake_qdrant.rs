//! A stand-in for a Qdrant server, for what a real one will not do on demand: fail upserts with
//! 503, to exercise retries. It answers the REST endpoints `quiver export --to qdrant` calls
//! with the shapes of Qdrant's API reference (collections with a named multivector, payload
//! indexes, points upsert / scroll / delete). Everything else is tested against a real server.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Collection {
    /// The creation request's body, answered back as the collection's configuration.
    pub config: Value,
    /// Per point: its multivector (text, then signature) and payload.
    pub points: BTreeMap<String, (Vec<Vec<f32>>, Value)>,
    pub payload_indexes: Vec<String>,
}

#[derive(Default)]
pub struct FakeState {
    pub collections: HashMap<String, Collection>,
    /// Upsert requests still to answer with 503.
    pub failing_upserts: usize,
    /// Points received by upserts, counting repeats.
    pub upserted_points: usize,
    pub upsert_requests: usize,
}

pub struct FakeQdrant {
    pub url: String,
    pub state: Arc<Mutex<FakeState>>,
}

type Shared = Arc<Mutex<FakeState>>;
type Reply = (StatusCode, Json<Value>);

fn ok(result: Value) -> Reply {
    (
        StatusCode::OK,
        Json(json!({"result": result, "status": "ok", "time": 0.0})),
    )
}

fn error(status: StatusCode, message: &str) -> Reply {
    (status, Json(json!({"status": {"error": message}})))
}

pub fn start() -> FakeQdrant {
    let state: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/collections/{name}",
            get(get_collection)
                .put(create_collection)
                .patch(update_collection),
        )
        .route("/collections/{name}/index", put(create_index))
        .route("/collections/{name}/points", put(upsert))
        .route("/collections/{name}/points/scroll", post(scroll))
        .route("/collections/{name}/points/delete", post(delete))
        .with_state(state.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("serve");
        });
    });
    FakeQdrant { url, state }
}

async fn get_collection(State(state): State<Shared>, Path(name): Path<String>) -> Reply {
    let state = state.lock().expect("lock");
    match state.collections.get(&name) {
        Some(c) => ok(json!({
            "status": "green",
            "points_count": c.points.len(),
            "config": {
                "params": {
                    "vectors": c.config["vectors"],
                    "sparse_vectors": c.config["sparse_vectors"],
                },
                "metadata": c.config["metadata"],
            },
        })),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Collection `{name}` doesn't exist!"),
        ),
    }
}

async fn create_collection(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let mut state = state.lock().expect("lock");
    if state.collections.contains_key(&name) {
        return error(
            StatusCode::CONFLICT,
            &format!("Wrong input: Collection `{name}` already exists!"),
        );
    }
    state.collections.insert(
        name,
        Collection {
            config: body,
            ..Collection::default()
        },
    );
    ok(json!(true))
}

async fn update_collection(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let mut state = state.lock().expect("lock");
    let Some(collection) = state.collections.get_mut(&name) else {
        return error(StatusCode::NOT_FOUND, "no collection");
    };
    collection.config["metadata"] = body["metadata"].clone();
    ok(json!(true))
}

async fn create_index(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let mut state = state.lock().expect("lock");
    let Some(collection) = state.collections.get_mut(&name) else {
        return error(StatusCode::NOT_FOUND, "no collection");
    };
    let field = body["field_name"].as_str().unwrap_or("").to_string();
    if !collection.payload_indexes.contains(&field) {
        collection.payload_indexes.push(field);
    }
    ok(json!({"operation_id": 0, "status": "completed"}))
}

async fn upsert(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    Json(body): Json<Value>,
) -> Reply {
    let mut state = state.lock().expect("lock");
    if state.failing_upserts > 0 {
        state.failing_upserts -= 1;
        return error(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    }
    if query.get("wait").map(String::as_str) != Some("true") {
        return error(StatusCode::BAD_REQUEST, "the test expects wait=true");
    }
    let points = body["points"].as_array().cloned().unwrap_or_default();
    state.upsert_requests += 1;
    state.upserted_points += points.len();
    let Some(collection) = state.collections.get_mut(&name) else {
        return error(StatusCode::NOT_FOUND, "no collection");
    };
    let size = collection.config["vectors"]["vector"]["size"]
        .as_u64()
        .unwrap_or(0) as usize;
    for point in points {
        let vectors: Vec<Vec<f32>> =
            serde_json::from_value(point["vector"]["vector"].clone()).unwrap_or_default();
        if vectors.is_empty() || vectors.iter().any(|v| v.len() != size) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Wrong input: Vector dimension error: expected dim: {size}"),
            );
        }
        let Some(id) = point["id"].as_str() else {
            return error(StatusCode::BAD_REQUEST, "point id must be a UUID string");
        };
        collection
            .points
            .insert(id.to_string(), (vectors, point["payload"].clone()));
    }
    ok(json!({"operation_id": 1, "status": "completed"}))
}

async fn scroll(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let state = state.lock().expect("lock");
    let Some(collection) = state.collections.get(&name) else {
        return error(StatusCode::NOT_FOUND, "no collection");
    };
    let limit = body["limit"].as_u64().unwrap_or(10) as usize;
    let start = body["offset"].as_str().unwrap_or("").to_string();
    let wanted: Vec<String> =
        serde_json::from_value(body["with_payload"].clone()).unwrap_or_default();
    let mut page: Vec<Value> = collection
        .points
        .range(start..)
        .take(limit + 1)
        .map(|(id, (_, payload))| {
            let selected: serde_json::Map<String, Value> = wanted
                .iter()
                .filter_map(|key| payload.get(key).map(|v| (key.clone(), v.clone())))
                .collect();
            json!({"id": id, "payload": selected})
        })
        .collect();
    let next = if page.len() > limit {
        page.pop().map(|point| point["id"].clone())
    } else {
        None
    };
    ok(json!({"points": page, "next_page_offset": next}))
}

async fn delete(
    State(state): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> Reply {
    let mut state = state.lock().expect("lock");
    let Some(collection) = state.collections.get_mut(&name) else {
        return error(StatusCode::NOT_FOUND, "no collection");
    };
    for id in body["points"].as_array().cloned().unwrap_or_default() {
        if let Some(id) = id.as_str() {
            collection.points.remove(id);
        }
    }
    ok(json!({"operation_id": 2, "status": "completed"}))
}
