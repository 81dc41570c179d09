//! WeCom's error codes in one table: what each tells the user to do, and what a live fetch does
//! about it (call again, get another token, or stop). `fetch` reads the action, `Error::Api` the
//! advice, so a code can't be retried without advice or advised on without a decision; neither
//! of those modules depends on the other through this one.

use std::net::IpAddr;
use std::str::FromStr;

use crate::endpoint::ListName;
use crate::text::quote;

/// What a live fetch does when an answer carries the errcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// WeCom is busy or overloaded: the same call again, after a backoff.
    Retry,
    /// The access token was refused: get another one (once) and call again.
    RefreshToken,
    /// Configuration (retrying can't fix it) or a limit (retrying makes it worse).
    Fatal,
}

/// What the user is told to do.
enum Advice {
    Text(&'static str),
    /// 60020: names the address WeCom saw the call come from, when `errmsg` quotes it.
    TrustedIp,
}

struct Code {
    code: i64,
    action: Action,
    advice: Advice,
}

const fn code(code: i64, action: Action, advice: &'static str) -> Code {
    Code {
        code,
        action,
        advice: Advice::Text(advice),
    }
}

/// The codes WeCom's docs (全局错误码) and experience say something useful about; any other
/// code is `Fatal` with `UNKNOWN` as its advice. Keyed on errcode, never on errmsg's wording.
const CODES: &[Code] = &[
    code(
        -1,
        Action::Retry,
        "WeCom is busy; retry later (at most 3 times)",
    ),
    code(
        40001,
        Action::Fatal,
        "the corp secret is invalid: copy the app's Secret again (应用管理 - the app - Secret) \
         into WECOM_CORP_SECRET or --corp-secret-file",
    ),
    code(
        40013,
        Action::Fatal,
        "the corp id is invalid: check WECOM_CORP_ID or --corp-id against 我的企业 - 企业信息 - 企业ID",
    ),
    code(40014, Action::RefreshToken, TOKEN_ADVICE),
    code(42001, Action::RefreshToken, TOKEN_ADVICE),
    // A missing token is not a refused one: another token is no answer to a request without one.
    code(41001, Action::Fatal, TOKEN_ADVICE),
    code(
        41004,
        Action::Fatal,
        "the corp secret is missing: set WECOM_CORP_SECRET or --corp-secret-file",
    ),
    code(
        45009,
        Action::Fatal,
        "the API call frequency limit was hit (per company and API: 10,000 a minute, 150,000 an \
         hour): wait a minute and try again",
    ),
    code(
        45033,
        Action::Retry,
        "too many concurrent calls: retry later",
    ),
    code(
        48002,
        Action::Fatal,
        "the API is forbidden for this app: add the app (a self-built app, 自建应用) under \
         我的企业 - 设置 - 域名IP - 可调用API的应用",
    ),
    Code {
        code: 60020,
        action: Action::Fatal,
        advice: Advice::TrustedIp,
    },
];

const TOKEN_ADVICE: &str = "the access token is invalid, expired or missing: fetch a new one (a \
     stale WECOM_ACCESS_TOKEN must be replaced; with WECOM_CORP_ID and WECOM_CORP_SECRET set, \
     wecom-allowlist gets its own)";

/// The advice for a code the table doesn't hold.
const UNKNOWN: &str = "see WeCom's error code reference (全局错误码) for this code";

fn find(errcode: i64) -> Option<&'static Code> {
    CODES.iter().find(|c| c.code == errcode)
}

/// What a live fetch does about `errcode`.
pub fn action(errcode: i64) -> Action {
    find(errcode).map_or(Action::Fatal, |c| c.action)
}

/// What a user should do about a WeCom error.
pub fn advice(errcode: i64, errmsg: &str) -> String {
    match find(errcode).map(|c| &c.advice) {
        Some(Advice::Text(text)) => (*text).into(),
        Some(Advice::TrustedIp) => match from_ip(errmsg) {
            Some(ip) => format!(
                "calls from {ip} are not allowed: add {ip} to the app's trusted IPs (企业可信IP)"
            ),
            None => "calls from this address are not allowed: add it to the app's trusted IPs (企业可信IP)".into(),
        },
        None => UNKNOWN.into(),
    }
}

/// The address WeCom saw the call come from, as quoted in `errmsg`: "..., from ip: 1.2.3.4, ...".
fn from_ip(errmsg: &str) -> Option<IpAddr> {
    let rest = &errmsg[errmsg.find("from ip:")? + "from ip:".len()..];
    let token = rest.trim_start().split([',', ' ']).next()?;
    IpAddr::from_str(token).ok()
}

/// The message of `Error::Api`; `call` names the live call that failed, if any.
pub fn describe(call: Option<&str>, errcode: i64, errmsg: &str) -> String {
    // WeCom's pages for the api and callback lists name no permission the app needs, unlike
    // get_server_domain_ip's: 可调用API的应用 is not the fix for them.
    let plain = [ListName::Api, ListName::Callback]
        .iter()
        .find(|l| call == Some(l.call()));
    let advice = match plain {
        Some(list) if errcode == 48002 => format!(
            "the API is forbidden for this app: WeCom's page for {} names no permission it needs (unlike get_server_domain_ip, which needs the app under 我的企业 - 设置 - 域名IP - 可调用API的应用); check that the Secret is a self-built app's of this corp, and WeCom's error code reference (全局错误码)",
            list.call()
        ),
        _ => advice(errcode, errmsg),
    };
    format!(
        "{}WeCom returned errcode {errcode} ({}): {advice}",
        call.map(|c| format!("{c}: ")).unwrap_or_default(),
        quote(errmsg),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A code is added whole or not at all: whatever `action` does other than give up comes
    /// from a row of the table, and that row says what to do in words of its own.
    #[test]
    fn every_code_fetch_retries_or_refreshes_on_is_in_the_table() {
        let mut acted_on = Vec::new();
        for errcode in -1_000..=100_000 {
            let action = action(errcode);
            if action == Action::Fatal {
                continue;
            }
            let row = find(errcode);
            assert_eq!(row.map(|r| r.action), Some(action), "errcode {errcode}");
            assert_ne!(advice(errcode, ""), UNKNOWN, "errcode {errcode}");
            acted_on.push((errcode, action));
        }
        // The codes WeCom documents as transient, and the two that mean the token went stale.
        assert_eq!(
            acted_on,
            [
                (-1, Action::Retry),
                (40014, Action::RefreshToken),
                (42001, Action::RefreshToken),
                (45033, Action::Retry),
            ]
        );
    }

    #[test]
    fn each_code_has_one_row() {
        for (i, c) in CODES.iter().enumerate() {
            assert!(
                CODES[i + 1..].iter().all(|d| d.code != c.code),
                "errcode {} is in the table twice",
                c.code
            );
        }
    }

    #[test]
    fn unknown_codes_are_final_and_point_at_the_reference() {
        assert_eq!(action(99_999), Action::Fatal);
        assert_eq!(advice(99_999, "x"), UNKNOWN);
    }

    #[test]
    fn the_trusted_ip_advice_names_the_caller_when_errmsg_does() {
        assert_eq!(
            advice(60020, "not allow to access from your ip, hint: [x], from ip: 203.0.113.7, more info at https://x"),
            "calls from 203.0.113.7 are not allowed: add 203.0.113.7 to the app's trusted IPs (企业可信IP)"
        );
        assert_eq!(
            advice(60020, "from ip: nonsense"),
            "calls from this address are not allowed: add it to the app's trusted IPs (企业可信IP)"
        );
    }
}
