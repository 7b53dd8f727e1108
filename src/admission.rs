//! AdmissionReview v1 in and out: decode, call `plan`, ensure copies, encode.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// POST /mutate. `uri` carries the apiserver's `?timeout=<Go duration>`.
pub async fn mutate(State(_state): State<AppState>, _uri: Uri, _body: Bytes) -> Response {
    (StatusCode::NOT_IMPLEMENTED, "not implemented yet").into_response()
}
