//! Errors in words: an error with its causes, and the first cause of a type.

/// An error and its causes, `a: b: c`, without the Debug dump `DisplayErrorContext` appends and
/// without repeating a cause that its parent already quoted.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !parts.last().is_some_and(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// The first error of type `T` among an error's causes (inside an I/O error's payload too:
/// `io::Error::source` skips its own payload).
pub fn cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<T>() {
            return Some(t);
        }
        let payload = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref());
        if let Some(t) = payload.and_then(|p| p.downcast_ref::<T>()) {
            return Some(t);
        }
        cur = c.source();
    }
    None
}
