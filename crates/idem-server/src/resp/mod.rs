//! RESP framing: requests in ([`request`]), replies out ([`encode`]).
//!
//! This is where bytes from a socket become a list of arguments; the
//! arguments become a command in `idem_core::Command::parse` (primitives) or
//! in [`crate::cmd`] (server commands such as PING and HELLO).

pub mod encode;
pub mod request;

pub use encode::{encode, encode_reply, Frame, Protocol};
pub use request::{check, parse, parse_into, take_request, FrameLimits, ProtocolError};
