//! Connect unary framing as the Connect protocol reference gives it: content types, compression,
//! the timeout header, and errors as `{"code", "message"}` with their HTTP statuses. Pure
//! functions over headers and bytes, shared by the server, the client and the fuzz target.

use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Code, Status};

/// Largest request body the worker takes, after decompression (a callable entrypoint can be
/// large); the same cap as gRPC's decoding limit.
pub const BODY_BYTES_MAX: usize = 32 << 20;

/// Responses smaller than this are not worth compressing (connect-go's default threshold).
pub const COMPRESS_BYTES_MIN: usize = 1024;

pub const PROTOCOL_VERSION_HEADER: &str = "connect-protocol-version";
pub const TIMEOUT_HEADER: &str = "connect-timeout-ms";

/// The two unary codecs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

impl Codec {
    /// `application/proto` or `application/json`, parameters (`; charset=utf-8`) allowed.
    pub fn from_content_type(value: &str) -> Option<Codec> {
        let essence = value.split(';').next().unwrap_or("").trim();
        if essence.eq_ignore_ascii_case("application/proto") {
            Some(Codec::Proto)
        } else if essence.eq_ignore_ascii_case("application/json") {
            Some(Codec::Json)
        } else {
            None
        }
    }

    pub fn of(headers: &HeaderMap) -> Option<Codec> {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(Codec::from_content_type)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Proto => "application/proto",
            Codec::Json => "application/json",
        }
    }

    /// A message from a (decompressed) body; the error (`invalid_argument`) says what did not
    /// decode.
    pub fn decode<M: Message + Default + DeserializeOwned>(self, body: &[u8]) -> Result<M, Status> {
        match self {
            Codec::Proto => M::decode(body).map_err(|e| {
                Status::invalid_argument(format!("the request body is not a valid protobuf: {e}"))
            }),
            // An empty JSON body is the empty message, as an empty protobuf body is.
            Codec::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
            Codec::Json => serde_json::from_slice(body).map_err(|e| {
                Status::invalid_argument(format!("the request body is not valid JSON: {e}"))
            }),
        }
    }

    pub fn encode<M: Message + Serialize>(self, message: &M) -> Vec<u8> {
        match self {
            Codec::Proto => message.encode_to_vec(),
            Codec::Json => serde_json::to_vec(message).expect("generated messages serialize"),
        }
    }
}

/// A body's `content-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    /// The request's encoding; one the worker cannot read is `unimplemented`, as the spec says.
    pub fn of(headers: &HeaderMap) -> Result<Encoding, Status> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(Encoding::Identity);
        };
        match value.to_str().map(str::trim) {
            Ok(v) if v.is_empty() || v.eq_ignore_ascii_case("identity") => Ok(Encoding::Identity),
            Ok(v) if v.eq_ignore_ascii_case("gzip") => Ok(Encoding::Gzip),
            _ => Err(Status::unimplemented(format!(
                "content-encoding {value:?} is not supported: use gzip or identity"
            ))),
        }
    }

    /// Whether an `accept-encoding` header lists gzip.
    pub fn accepts_gzip(headers: &HeaderMap) -> bool {
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|e| {
                let name = e.split(';').next().unwrap_or("").trim();
                name.eq_ignore_ascii_case("gzip")
            })
    }

    /// The body as sent, at most `max` bytes once decompressed (a gzip bomb is
    /// `resource_exhausted`, never inflated in full).
    pub fn decompress(self, body: Bytes, max: usize) -> Result<Bytes, Status> {
        if body.len() > max {
            return Err(too_large(max));
        }
        match self {
            Encoding::Identity => Ok(body),
            Encoding::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .take(max as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| {
                        Status::invalid_argument(format!("the gzip request body is corrupt: {e}"))
                    })?;
                if out.len() > max {
                    return Err(too_large(max));
                }
                Ok(out.into())
            }
        }
    }
}

fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "the request body is larger than {max} bytes once decompressed"
    ))
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// `connect-protocol-version`: absent is tolerated, `1` accepted, anything else refused.
pub fn check_protocol_version(headers: &HeaderMap) -> Result<(), Status> {
    match headers.get(PROTOCOL_VERSION_HEADER) {
        None => Ok(()),
        Some(v) if v.as_bytes() == b"1" => Ok(()),
        Some(v) => Err(Status::invalid_argument(format!(
            "{PROTOCOL_VERSION_HEADER} {v:?} is not supported: use 1"
        ))),
    }
}

/// `connect-timeout-ms`: at most 10 digits, as the spec says.
pub fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
    };
    let digits = value.as_bytes();
    let valid = !digits.is_empty() && digits.len() <= 10 && digits.iter().all(u8::is_ascii_digit);
    let ms = std::str::from_utf8(digits)
        .ok()
        .filter(|_| valid)
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "{TIMEOUT_HEADER} {value:?} must be 1 to 10 decimal digits"
            ))
        })?;
    Ok(Some(Duration::from_millis(ms)))
}

/// Every code with its Connect name and HTTP status (Connect protocol reference, "Error codes").
const CODES: [(Code, &str, u16); 16] = [
    (Code::Cancelled, "canceled", 499),
    (Code::Unknown, "unknown", 500),
    (Code::InvalidArgument, "invalid_argument", 400),
    (Code::DeadlineExceeded, "deadline_exceeded", 504),
    (Code::NotFound, "not_found", 404),
    (Code::AlreadyExists, "already_exists", 409),
    (Code::PermissionDenied, "permission_denied", 403),
    (Code::ResourceExhausted, "resource_exhausted", 429),
    (Code::FailedPrecondition, "failed_precondition", 400),
    (Code::Aborted, "aborted", 409),
    (Code::OutOfRange, "out_of_range", 400),
    (Code::Unimplemented, "unimplemented", 501),
    (Code::Internal, "internal", 500),
    (Code::Unavailable, "unavailable", 503),
    (Code::DataLoss, "data_loss", 500),
    (Code::Unauthenticated, "unauthenticated", 401),
];

pub fn code_name(code: Code) -> &'static str {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or("unknown", |(_, name, _)| name)
}

pub fn code_from_name(name: &str) -> Option<Code> {
    CODES
        .iter()
        .find(|(_, n, _)| *n == name)
        .map(|(c, _, _)| *c)
}

pub fn http_status(code: Code) -> StatusCode {
    let status = CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(500, |(_, _, s)| *s);
    StatusCode::from_u16(status).expect("valid status codes")
}

/// The code a client infers from an HTTP status when the body is no Connect error (the spec's
/// "HTTP to error code" table).
pub fn code_from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[derive(Serialize, serde::Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

/// The JSON body of an error response.
pub fn error_body(status: &Status) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        code: code_name(status.code()).to_string(),
        message: status.message().to_string(),
    })
    .expect("serializing strings")
}

/// What a non-200 response means: the JSON error body, or the status when there is none.
pub fn parse_error(status: StatusCode, body: &[u8]) -> Status {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => Status::new(code_from_name(&e.code).unwrap_or(Code::Unknown), e.message),
        Err(_) => Status::new(
            code_from_http(status),
            format!(
                "HTTP {status} without a Connect error: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        ),
    }
}

/// A request as the server reads it, after the content type was checked: protocol version,
/// encoding, size and body. What the `connect` fuzz target drives.
pub fn decode_request<M: Message + Default + DeserializeOwned>(
    codec: Codec,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<M, Status> {
    check_protocol_version(headers)?;
    let body = Encoding::of(headers)?.decompress(body, BODY_BYTES_MAX)?;
    codec.decode(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            Codec::from_content_type("application/json; charset=utf-8"),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::from_content_type("Application/Proto"),
            Some(Codec::Proto)
        );
        for other in [
            "application/grpc",
            "application/connect+proto",
            "text/plain",
            "",
        ] {
            assert_eq!(Codec::from_content_type(other), None, "{other}");
        }
    }

    #[test]
    fn codes_round_trip_through_names_and_statuses() {
        for (code, name, http) in CODES {
            assert_eq!(code_from_name(name), Some(code));
            assert_eq!(http_status(code).as_u16(), http);
            let back = parse_error(http_status(code), &error_body(&Status::new(code, "m")));
            assert_eq!((back.code(), back.message()), (code, "m"));
        }
        let bare = parse_error(StatusCode::SERVICE_UNAVAILABLE, b"<html>");
        assert_eq!(bare.code(), Code::Unavailable);
    }

    #[test]
    fn gzip_bombs_stop_at_the_cap() {
        let bomb = gzip(&vec![0u8; 4096]);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let encoding = Encoding::of(&headers).unwrap();
        assert_eq!(
            encoding
                .decompress(bomb.clone().into(), 4096)
                .unwrap()
                .len(),
            4096
        );
        let err = encoding.decompress(bomb.into(), 4095).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }

    #[test]
    fn timeouts_are_one_to_ten_digits() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(TIMEOUT_HEADER, v.parse().unwrap());
            timeout(&h)
        };
        assert_eq!(with("1500").unwrap(), Some(Duration::from_millis(1500)));
        for bad in ["", "-1", "12345678901", "1.5", "1s"] {
            assert_eq!(
                with(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad}"
            );
        }
    }
}
