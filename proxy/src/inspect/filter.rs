//! Which frontends a view shows: `--service NAMESPACE/NAME` and `--vip`.
//! Pure: no I/O.

use std::{net::IpAddr, str::FromStr};

use super::view::ServiceRef;

/// `--service NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSelector {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ServiceSelector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
        }
    }
}

/// Which frontends a view shows. Empty: all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub service: Option<ServiceSelector>,
    pub vip: Option<IpAddr>,
}

impl Filter {
    pub(super) fn is_empty(&self) -> bool {
        self.service.is_none() && self.vip.is_none()
    }

    /// A frontend without a name never matches `--service`.
    pub(super) fn matches(&self, vip: IpAddr, owner: Option<&ServiceRef>) -> bool {
        self.vip.is_none_or(|v| v == vip)
            && self.service.as_ref().is_none_or(|s| {
                owner.is_some_and(|o| o.namespace == s.namespace && o.name == s.name)
            })
    }
}
