//! The portal as a browser without JavaScript uses it: sign-in with the
//! login form's CSRF cookie and field, then the session cookie.

/// The value of cookie `name` set by `r`.
pub fn cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_string())
        .unwrap_or_else(|| panic!("no cookie {name}"))
}

/// The text between the first `start` and the next `end`.
pub fn between(text: &str, start: &str, end: &str) -> String {
    text.split(start)
        .nth(1)
        .and_then(|r| r.split(end).next())
        .unwrap_or_else(|| panic!("no {start} in {text}"))
        .to_string()
}

/// Sign in at `base` (`http` must not follow redirects): the `Cookie` header
/// value of the session ("mfasync_session=…").
pub async fn sign_in(http: &reqwest::Client, base: &str, username: &str, password: &str) -> String {
    let page = http.get(format!("{base}/login")).send().await.unwrap();
    let login = cookie(&page, "mfasync_login");
    let field = between(
        &page.text().await.unwrap(),
        "name=\"login_csrf\" value=\"",
        "\"",
    );
    let r = http
        .post(format!("{base}/login"))
        .header("cookie", format!("mfasync_login={login}"))
        .header("origin", base)
        .header("sec-fetch-site", "same-origin")
        .form(&[
            ("username", username),
            ("password", password),
            ("login_csrf", field.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "sign-in of {username}");
    format!("mfasync_session={}", cookie(&r, "mfasync_session"))
}
