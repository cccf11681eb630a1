use super::*;

#[test]
fn only_transient_failures_are_retried() {
    for status in [500, 502, 503, 504, 429] {
        assert!(is_retryable(&S3Error::HttpFailWithBody(status, String::new())), "{status}");
    }
    for status in [400, 401, 403, 404, 409, 412] {
        assert!(!is_retryable(&S3Error::HttpFailWithBody(status, String::new())), "{status}");
    }
    for body in ["<Error><Code>RequestTimeout</Code></Error>", "<Error><Code>BadDigest</Code></Error>"] {
        assert!(is_retryable(&S3Error::HttpFailWithBody(400, body.into())), "{body}");
        assert!(to_store_error("put", "k", S3Error::HttpFailWithBody(400, body.into())).is_retryable(), "{body}");
    }
    assert!(is_retryable(&S3Error::HttpFailWithBody(408, String::new())));
    assert!(is_retryable(&S3Error::Io(std::io::ErrorKind::ConnectionRefused.into())));
    assert!(!is_retryable(&S3Error::Io(std::io::ErrorKind::PermissionDenied.into())));
}

#[test]
fn errors_map_to_store_errors() {
    assert!(matches!(to_store_error("get", "a/b", S3Error::HttpFailWithBody(404, String::new())), StoreError::BlobNotFound(k) if k == "a/b"));
    let e = to_store_error("get", "a/b", S3Error::HttpFailWithBody(503, "<Error><Code>SlowDown</Code></Error>".into()));
    assert!(matches!(&e, StoreError::Unavailable(m) if m.contains("503") && m.contains("SlowDown")), "{e}");
    let e = to_store_error("put", "a/b", S3Error::HttpFailWithBody(403, "<Error><Code>AccessDenied</Code></Error>".into()));
    assert!(matches!(&e, StoreError::Refused(m) if m.contains("403") && m.contains("AccessDenied")), "{e}");
    assert!(!e.is_retryable());
    assert!(to_store_error("put", "a/b", S3Error::HttpFailWithBody(429, String::new())).is_retryable(), "throttling is waited out");
}

#[test]
fn etags_compare_without_quotes_or_case() {
    let md5 = format!("{:x}", md5::compute(b"clip"));
    assert!(same_etag(&format!("\"{md5}\""), &md5));
    assert!(same_etag(&format!("&quot;{}&quot;", md5.to_uppercase()), &md5));
    assert!(!same_etag("\"0123\"", &md5));
    assert!(check_etag("k", "\"0123\"", &md5).is_err());
    assert_eq!(hex::decode(&md5).unwrap(), md5::compute(b"clip").0.to_vec());
}
