//! The endpoints a guest account may call (spec: "Guest Access", "Client behaviour");
//! every other authenticated request of a guest is 403 `M_GUEST_ACCESS_FORBIDDEN`. What a
//! guest may do through these (join only `can_join` rooms, set only a display name) is
//! decided in `core/src/accounts/guests.rs`.

/// Method and route, version and parameters left out (`*` for each parameter).
const ALLOWED: &[(&str, &str)] = &[
    // Reading rooms and media.
    ("GET", "/rooms/*/state"),
    ("GET", "/rooms/*/context/*"),
    ("GET", "/rooms/*/event/*"),
    ("GET", "/rooms/*/state/*"),
    ("GET", "/rooms/*/state/*/"),
    ("GET", "/rooms/*/state/*/*"),
    ("GET", "/rooms/*/messages"),
    ("GET", "/rooms/*/members"),
    ("GET", "/rooms/*/initialSync"),
    ("GET", "/sync"),
    ("POST", "/org.matrix.simplified_msc3575/sync"),
    ("GET", "/events"),
    ("GET", "/media/download/*/*"),
    ("GET", "/media/download/*/*/*"),
    ("GET", "/media/thumbnail/*/*"),
    // Taking part.
    ("POST", "/rooms/*/join"),
    ("POST", "/join/*"),
    ("POST", "/rooms/*/leave"),
    ("PUT", "/rooms/*/send/*/*"),
    ("PUT", "/rooms/*/state/*"),
    ("PUT", "/rooms/*/state/*/"),
    ("PUT", "/rooms/*/state/*/*"),
    ("PUT", "/sendToDevice/*/*"),
    // Their own account (the profile route serves every field; core allows only the
    // display name).
    ("PUT", "/profile/*/*"),
    ("DELETE", "/profile/*/*"),
    ("GET", "/devices"),
    ("GET", "/devices/*"),
    ("PUT", "/devices/*"),
    ("GET", "/account/whoami"),
    // End-to-end encryption.
    ("POST", "/keys/upload"),
    ("POST", "/keys/query"),
    ("POST", "/keys/claim"),
    // What every client needs to run at all: filters for `/sync`, capabilities, profiles
    // to show, and logging out (as Synapse allows guests).
    ("POST", "/user/*/filter"),
    ("GET", "/user/*/filter/*"),
    ("GET", "/capabilities"),
    ("GET", "/profile/*"),
    ("GET", "/profile/*/*"),
    ("POST", "/logout"),
];

/// `route` with its `/_matrix/client/{version}` prefix dropped and every `{parameter}`
/// replaced by `*`.
fn shape(route: &str) -> Option<String> {
    let rest = route.strip_prefix("/_matrix/client/")?;
    let (_version, rest) = rest.split_once('/')?;
    let mut out = String::with_capacity(rest.len() + 1);
    for segment in rest.split('/') {
        out.push('/');
        if segment.starts_with('{') && segment.ends_with('}') {
            out.push('*');
        } else {
            out.push_str(segment);
        }
    }
    Some(out)
}

/// Whether a guest may call `method` on the matched `route`.
pub fn allowed(method: &http::Method, route: &str) -> bool {
    let Some(shape) = shape(route) else {
        return false;
    };
    ALLOWED
        .iter()
        .any(|(m, r)| *m == method.as_str() && *r == shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_matched_by_shape() {
        let get = http::Method::GET;
        let put = http::Method::PUT;
        assert!(allowed(&get, "/_matrix/client/v3/sync"));
        assert!(allowed(
            &get,
            "/_matrix/client/r0/rooms/{room_id}/state/{kind}/{state_key}"
        ));
        assert!(allowed(
            &put,
            "/_matrix/client/v3/rooms/{room_id}/send/{kind}/{txn_id}"
        ));
        assert!(allowed(
            &get,
            "/_matrix/client/v1/media/download/{server}/{media}"
        ));
        assert!(!allowed(&put, "/_matrix/client/v3/sync"));
        assert!(!allowed(
            &http::Method::POST,
            "/_matrix/client/v3/createRoom"
        ));
        assert!(!allowed(
            &http::Method::POST,
            "/_matrix/client/v3/rooms/{room_id}/invite"
        ));
        assert!(!allowed(&get, "/_matrix/media/v3/download/{a}/{b}"));
    }
}
