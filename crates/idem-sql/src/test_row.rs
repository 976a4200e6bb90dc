//! A result row made of plain values, for unit tests of the decoders: a
//! driver's row cannot be built outside a connection, and every decoder
//! reads rows through [`SqlRow`] only.

use idem_core::outcome::unexpected;
use idem_core::CmdError;

use crate::decode::SqlRow;

/// One column's value.
#[derive(Clone, Debug)]
pub enum V {
    /// Text (also readable as bytes).
    T(&'static str),
    /// An integer.
    I(i64),
    /// Bytes.
    B(&'static [u8]),
    /// SQL NULL.
    Null,
}

/// A row of plain values.
#[derive(Clone, Debug)]
pub struct R(pub Vec<V>);

impl SqlRow for R {
    fn text(&self, i: usize) -> Result<Option<String>, CmdError> {
        match self.0.get(i) {
            Some(V::T(t)) => Ok(Some(t.to_string())),
            Some(V::Null) => Ok(None),
            _ => Err(unexpected("test", format!("column {i} is not text"))),
        }
    }
    fn int(&self, i: usize) -> Result<Option<i64>, CmdError> {
        match self.0.get(i) {
            Some(V::I(n)) => Ok(Some(*n)),
            Some(V::Null) => Ok(None),
            _ => Err(unexpected("test", format!("column {i} is not an integer"))),
        }
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, CmdError> {
        match self.0.get(i) {
            Some(V::B(b)) => Ok(Some(b.to_vec())),
            Some(V::T(t)) => Ok(Some(t.as_bytes().to_vec())),
            Some(V::Null) => Ok(None),
            _ => Err(unexpected("test", format!("column {i} is not bytes"))),
        }
    }
}
