//! Entry points for the fuzz targets (`fuzz/` and `crates/idem-fuzz`) into
//! the HTTP body decoders, which are otherwise private. Compiled only with
//! the `fuzzing` feature; not part of the API.

use bytes::Bytes;

/// Decodes a `POST /v1/command` body as the server does, with `args_max`
/// arguments at most: the arguments, or the refusal's code and message.
pub fn command_body(body: &[u8], args_max: usize) -> Result<Vec<Bytes>, (&'static str, String)> {
    crate::http::parse_args(body, args_max).map_err(|e| (e.code.as_str(), e.message))
}

/// How many API v1 routes there are (for [`v1_body`]).
pub fn v1_routes() -> usize {
    crate::api::v1::ROUTES.len()
}

/// Builds the command arguments of API v1 route number `route` (modulo
/// [`v1_routes`]) from its path parameter's value and a JSON body, as the
/// route's handler does.
pub fn v1_body(route: usize, param: Option<&str>, body: &[u8]) -> Result<Vec<Bytes>, String> {
    let routes = crate::api::v1::ROUTES;
    crate::api::v1::args(&routes[route % routes.len()], param, body)
}
