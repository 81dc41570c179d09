//! WeCom's three address lists. `server` (`get_server_domain_ip`) is what WeCom's clients
//! reach; `api` (`get_api_domain_ip`) is what the app's own servers call; `callback`
//! (`getcallbackip`) is where WeCom's callbacks to the app come from. The first two are
//! egress allowlists, the third an ingress one: rendering one as another would be a wrong
//! firewall, so a list's kind travels with it (`--list`, the mark in saved answers and
//! `source.json`) and a mix-up is refused.

use serde::{Deserialize, Serialize};

/// Which of WeCom's lists a run is about.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ListName {
    // Plain comments, not doc comments: clap would print them as a long help of each value.
    // get_server_domain_ip: domains and addresses WeCom's clients reach (egress).
    #[default]
    Server,
    // get_api_domain_ip: the addresses of WeCom's API that the app's servers call (egress,
    // TCP 443).
    Api,
    // getcallbackip: the addresses WeCom's callbacks come from (ingress, to the callback
    // URL's port).
    Callback,
}

/// Which way the allowed traffic goes, seen from the firewall's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the listed destinations.
    Egress,
    /// From the listed sources.
    Ingress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

/// The port the app's servers call WeCom's API on: HTTPS.
pub const API_PORT: u16 = 443;

/// The key `fetch` adds to a saved api or callback answer, and `build` to their `source.json`:
/// the two answers have one shape, so only this mark tells them apart later.
pub const MARK: &str = "list";

impl ListName {
    pub const ALL: [ListName; 3] = [ListName::Server, ListName::Api, ListName::Callback];

    pub fn name(self) -> &'static str {
        match self {
            ListName::Server => "server",
            ListName::Api => "api",
            ListName::Callback => "callback",
        }
    }

    pub fn from_name(name: &str) -> Option<ListName> {
        ListName::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The API call, as messages and file headers name it.
    pub fn call(self) -> &'static str {
        match self {
            ListName::Server => "get_server_domain_ip",
            ListName::Api => "get_api_domain_ip",
            ListName::Callback => "getcallbackip",
        }
    }

    /// The call's path below the API base.
    pub fn path(self) -> &'static str {
        match self {
            ListName::Server => "cgi-bin/security/get_server_domain_ip",
            ListName::Api => "cgi-bin/get_api_domain_ip",
            ListName::Callback => "cgi-bin/getcallbackip",
        }
    }

    pub const fn direction(self) -> Direction {
        match self {
            ListName::Server | ListName::Api => Direction::Egress,
            ListName::Callback => Direction::Ingress,
        }
    }

    /// True for the lists whose answer is a plain `ip_list` of strings.
    pub fn is_plain(self) -> bool {
        self != ListName::Server
    }

    /// What the list is, for messages: `the callback list (getcallbackip)`.
    pub fn describe(self) -> String {
        format!("the {} list ({})", self.name(), self.call())
    }
}
