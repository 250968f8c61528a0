//! Symbol names of a link graph: shared, cheap to clone, compared by content.
//!
//! jit-link cannot see jit-core's interned `SymbolName`; the object linking layer converts
//! between the two at the boundary.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The name of a symbol in a [`crate::LinkGraph`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SymbolName(Arc<str>);

impl SymbolName {
    /// A name with this text.
    pub fn new(name: &str) -> SymbolName {
        SymbolName(Arc::from(name))
    }

    /// The text of the name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for SymbolName {
    fn from(name: &str) -> SymbolName {
        SymbolName::new(name)
    }
}

impl From<String> for SymbolName {
    fn from(name: String) -> SymbolName {
        SymbolName(Arc::from(name))
    }
}

impl Borrow<str> for SymbolName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for SymbolName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SymbolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SymbolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}
