//! An axum app made idempotent by the layer, with no change to its handler.
//!
//! ```text
//! cargo run -p idem-gateway --example axum_app
//! curl -si -X POST localhost:3000/orders -H 'Idempotency-Key: "k1"' -H 'content-type: application/json' -d '{"item":"tea"}'
//! curl -si -X POST localhost:3000/orders -H 'Idempotency-Key: "k1"' -H 'content-type: application/json' -d '{"item":"tea"}'
//! ```
//!
//! The second call returns the first call's response (same order id) with
//! `Idempotent-Replayed: true`. Records live in the embedded durable store
//! under `./idem-example-data`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use idem_gateway::{IdempotencyLayer, LayerConfig};

async fn create_order(State(next_id): State<Arc<AtomicU64>>, body: String) -> impl IntoResponse {
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let location = format!("/orders/{id}");
    (StatusCode::CREATED, [(header::LOCATION, location)], format!("{{\"id\":{id},\"request\":{body}}}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let store = idem_store::Store::open(idem_store::StoreConfig {
        data_dir: Some("./idem-example-data".into()),
        ..Default::default()
    })?;
    // IETF mode (no routes): POST and PATCH carrying Idempotency-Key.
    let layer = IdempotencyLayer::new(store, LayerConfig::default())?;
    let app =
        axum::Router::new().route("/orders", post(create_order)).with_state(Arc::new(AtomicU64::new(1))).layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
