//! API errors: a status code and a message, written as Ollama's `{"error": "…"}` or OpenAI's
//! `{"error": {"message", "type", "param", "code"}}` depending on the route family.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Which API family an error is reported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `/api/*`.
    Ollama,
    /// `/v1/*`.
    OpenAi,
}

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault, if any.
    pub param: Option<String>,
    /// The API family.
    pub flavor: Flavor,
}

impl Flavor {
    /// The family of a request path: `/v1/*` is OpenAI's, everything else Ollama's.
    pub fn of_path(path: &str) -> Self {
        if path.starts_with("/v1") {
            Self::OpenAi
        } else {
            Self::Ollama
        }
    }
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            flavor: Flavor::Ollama,
        }
    }

    /// 400, naming the field at fault.
    pub fn bad_field(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 for a model.
    pub fn no_model(name: &str) -> Self {
        Self {
            param: Some("model".into()),
            ..Self::new(
                StatusCode::NOT_FOUND,
                format!("model \"{name}\" not found, try pulling it first"),
            )
        }
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The same error for another API family.
    pub fn flavor(mut self, f: Flavor) -> Self {
        self.flavor = f;
        self
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        match self.flavor {
            Flavor::Ollama => json!({ "error": self.message }),
            Flavor::OpenAi => {
                let kind = match self.status.as_u16() {
                    400 | 413 | 422 => "invalid_request_error",
                    401 => "authentication_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    _ => "server_error",
                };
                json!({ "error": { "message": self.message, "type": kind, "param": self.param, "code": self.status.as_u16() } })
            }
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// Parses a JSON request body, naming the field at fault on error.
pub fn parse_body<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    flavor: Flavor,
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(
            ApiError::bad("the request body is empty (expected a JSON object)").flavor(flavor),
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if inner.is_syntax() || inner.is_eof() {
            format!("invalid JSON: {inner}")
        } else if path == "." {
            format!("invalid request: {inner}")
        } else {
            format!("invalid field `{path}`: {inner}")
        };
        ApiError {
            param: (path != ".").then_some(path),
            ..ApiError::bad(msg)
        }
        .flavor(flavor)
    })
}
