//! Routes of policy `tpm`: the node's challenge and enrollment (HTTPS, open: the TPM is the
//! credential) and the admin API for EK bindings (scope `identity`). The logic is in [`super::tpm`].

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};

use super::Identity;
use super::tpm::{Challenge, ChallengeBody, EkBody, TpmEnrollBody, TpmEnrolled};
use crate::http::{Json, Problem};
use crate::store::TpmEk;

/// Enrollment routes of the HTTPS listener.
pub fn https_router(id: Identity) -> Router {
    Router::new()
        .route("/identity/v1/tpm/challenge", post(challenge))
        .route("/identity/v1/tpm/enroll", post(enroll))
        .with_state(id)
}

/// Admin routes (scope `identity`).
pub fn admin_router(id: Identity) -> Router {
    Router::new()
        .route(
            "/identity/v1/tpm/eks/{xname}",
            get(show_ek).put(set_ek).delete(clear_ek),
        )
        .with_state(id)
}

async fn challenge(
    State(id): State<Identity>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Json(b): Json<ChallengeBody>,
) -> Result<Json<Challenge>, Problem> {
    let peer = super::routes::v4(peer)?;
    Ok(Json(id.tpm_challenge(peer, &b).await?))
}

async fn enroll(
    State(id): State<Identity>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Json(b): Json<TpmEnrollBody>,
) -> Result<Json<TpmEnrolled>, Problem> {
    let peer = super::routes::v4(peer)?;
    Ok(Json(id.tpm_enroll(peer, &b).await?))
}

async fn show_ek(
    State(id): State<Identity>,
    Path(x): Path<String>,
) -> Result<Json<TpmEk>, Problem> {
    Ok(Json(id.tpm_ek(&x).await?))
}

async fn set_ek(
    State(id): State<Identity>,
    Path(x): Path<String>,
    Json(b): Json<EkBody>,
) -> Result<Json<TpmEk>, Problem> {
    Ok(Json(id.set_tpm_ek(&x, &b.ek_hash).await?))
}

async fn clear_ek(
    State(id): State<Identity>,
    Path(x): Path<String>,
) -> Result<StatusCode, Problem> {
    id.clear_tpm_ek(&x).await?;
    Ok(StatusCode::NO_CONTENT)
}
