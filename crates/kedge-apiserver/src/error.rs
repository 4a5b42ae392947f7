//! API errors, answered as Kubernetes `Status` objects so kubectl prints them as it would for a
//! real cluster.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::schema::Cause;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        Self::new(400, "BadRequest", msg)
    }

    pub fn unauthorized() -> ApiError {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    pub fn unavailable(msg: impl Into<String>) -> ApiError {
        Self::new(503, "ServiceUnavailable", msg)
    }

    pub fn forbidden(msg: impl Into<String>) -> ApiError {
        Self::new(403, "Forbidden", msg)
    }

    /// `res` is the qualified resource (`ruleendpoints.rules.kubeedge.io`).
    pub fn not_found(res: &str, name: &str) -> ApiError {
        let (kind, group) = res.split_once('.').unwrap_or((res, ""));
        let mut e = Self::new(404, "NotFound", format!("{res} \"{name}\" not found"));
        e.details = Some(json!({"name": name, "group": group, "kind": kind}));
        e
    }

    pub fn path_not_found() -> ApiError {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(res: &str, name: &str) -> ApiError {
        Self::new(
            409,
            "AlreadyExists",
            format!("{res} \"{name}\" already exists"),
        )
    }

    pub fn conflict(res: &str, name: &str) -> ApiError {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {res} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again"
            ),
        )
    }

    pub fn conflict_msg(res: &str, name: &str, why: &str) -> ApiError {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {res} \"{name}\": {why}"),
        )
    }

    pub fn method_not_allowed(msg: impl Into<String>) -> ApiError {
        Self::new(405, "MethodNotAllowed", msg)
    }

    pub fn gone(msg: impl Into<String>) -> ApiError {
        Self::new(410, "Expired", msg)
    }

    pub fn too_large(limit: usize) -> ApiError {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn unsupported_media(msg: impl Into<String>) -> ApiError {
        Self::new(415, "UnsupportedMediaType", msg)
    }

    /// 422: `kind.group "name" is invalid: <causes>`.
    pub fn invalid(kind_group: &str, name: &str, causes: Vec<Cause>) -> ApiError {
        let all: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let joined = if all.len() == 1 {
            all[0].clone()
        } else {
            format!("[{}]", all.join(", "))
        };
        let (kind, group) = kind_group.split_once('.').unwrap_or((kind_group, ""));
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind_group} \"{name}\" is invalid: {joined}"),
        );
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
        e.details = Some(json!({"name": name, "group": group, "kind": kind, "causes": causes}));
        e
    }

    pub fn internal(msg: impl Into<String>) -> ApiError {
        Self::new(500, "InternalError", msg)
    }

    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "store write failed");
        let msg = e.to_string();
        if msg.contains("full") {
            // SQLITE_FULL: say so plainly; nothing was written.
            Self::new(
                507,
                "InternalError",
                format!("the API store is out of disk space: {msg}"),
            )
        } else {
            Self::internal(msg)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (code, [("content-type", "application/json")], body).into_response()
    }
}
