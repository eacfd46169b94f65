//! The sender: spool segments to Elasticsearch, one bulk request each, until every document in
//! a segment is delivered or dead-lettered. It never ends on a failure while it runs: each one is
//! counted by kind, reported as the shipper's trouble, and retried with backoff.
//!
//! What a failed bulk request leads to, by what Elasticsearch said:
//! - unreachable, 401/403 (auth), 404/405 (wrong endpoint), 408, 429, 5xx, an answer that is not
//!   a bulk answer: the same documents again, after a backoff (never dead-lettered);
//! - 413 (too large), 400/422 (malformed): the body split in two, each half sent on its own,
//!   until the document at fault is alone; that one is dead-lettered with the reason.
//!
//! Per-item answers: 2xx delivered, 429/5xx retried (those items only), other 4xx dead-lettered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::elasticsearch::{dead_letters, pairs, read_answer, Es, EsError, Outcome, Refused};
use super::spool::{Segment, Spool, SpoolError, DEAD_LETTERS};
use super::{templates, SendOptions, ShipError, Stats};

/// The kind of a failed request, as counted.
pub fn es_kind(e: &EsError) -> &'static str {
    match e {
        EsError::Request { .. } => "unreachable",
        EsError::Timeout { .. } => "timeout",
        EsError::Status { status, .. } => match status {
            401 | 403 => "auth",
            404 | 405 => "endpoint",
            413 => "too_large",
            429 => "throttled",
            400 | 422 => "malformed",
            s if *s >= 500 => "server",
            _ => "refused",
        },
        EsError::Settings(_) => "settings",
    }
}

/// Whether a request refused as a whole is about its content (split it to find the document
/// at fault) rather than about the moment or the endpoint (try again).
fn about_content(e: &EsError) -> bool {
    matches!(
        e,
        EsError::Status {
            status: 400 | 413 | 422,
            ..
        }
    )
}

/// Sleeps `backoff` (doubling it, up to 30 s) unless stopped first; `false` when stopped.
async fn pause(backoff: &mut Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(*backoff) => {}
        _ = stop.changed() => {}
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(30));
    !*stop.borrow()
}

/// One bulk request and its answer read item by item.
async fn send(es: &Es, body: &Bytes) -> Result<Outcome, EsError> {
    let answer = es.bulk(body.clone()).await?;
    read_answer(body, &answer).map_err(|message| EsError::Request {
        url: es.url.clone(),
        message: format!("an answer that is not a bulk answer: {message}"),
    })
}

/// Keeps refused documents with their reason: in the dead-letter index when `es` takes them,
/// else in the spool's dead-letter file; while neither can, retried. `false` when stopped first.
async fn dead_letter(
    es: Option<&Es>,
    spool: &Spool,
    prefix: &str,
    refused: &[Refused],
    stats: &Stats,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let n = refused.len() as u64;
    let letters = Bytes::from(dead_letters(refused, prefix, chrono::Utc::now()));
    let mut backoff = Duration::from_millis(200);
    loop {
        if let Some(es) = es {
            if send(es, &letters).await.is_ok_and(|o| o.delivered == n) {
                stats.dead_lettered.fetch_add(n, Ordering::Relaxed);
                return true;
            }
        }
        match spool.write_dead_letters(&letters) {
            Ok(()) => {
                stats.dead_letter_file.fetch_add(n, Ordering::Relaxed);
                stats.dead_lettered.fetch_add(n, Ordering::Relaxed);
                return true;
            }
            Err(e) => stats.failed(
                e.kind(),
                format!("cannot keep {n} refused documents in {DEAD_LETTERS}: {e}; retried"),
            ),
        }
        if !pause(&mut backoff, stop).await {
            return false;
        }
    }
}

/// The body's first half of documents and the rest.
fn split(body: &Bytes) -> (Bytes, Bytes) {
    let p = pairs(body);
    let cut = p.get(p.len() / 2).map_or(body.len(), |(action, _)| action.start);
    (body.slice(..cut), body.slice(cut..))
}

/// How many documents a bulk request carries at most: none at first; after a timeout half of
/// what timed out, growing back by an eighth with each request at the cap that is answered in
/// time (a slow node gets bulks it can answer within the timeout, and a recovered one gets its
/// whole segments back). Shared by the segments in flight.
struct Pace {
    docs: AtomicUsize,
}

impl Default for Pace {
    fn default() -> Self {
        Pace {
            docs: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Pace {
    /// The first documents of `body` that the cap allows, the rest, and whether the first part
    /// holds as many as the cap (no count without a cap: nothing to grow).
    fn take(&self, body: Bytes) -> (Bytes, Bytes, bool) {
        let cap = self.docs.load(Ordering::Relaxed);
        if cap == usize::MAX {
            return (body, Bytes::new(), false);
        }
        // Document `cap` starts after the newline ending line 2·cap.
        match memchr::memchr_iter(b'\n', &body).nth(2 * cap - 1) {
            Some(end) if end + 1 < body.len() => (body.slice(..end + 1), body.slice(end + 1..), true),
            Some(_) => (body, Bytes::new(), true),
            None => (body, Bytes::new(), false),
        }
    }

    /// `docs` timed out: the cap becomes half of them (at least one); returns it.
    fn slowed(&self, docs: usize) -> usize {
        let cap = (docs / 2).max(1);
        self.docs.fetch_min(cap, Ordering::Relaxed);
        self.docs.load(Ordering::Relaxed)
    }

    /// A bulk was answered in time: when it held as many documents as the cap (`full`, from
    /// [`Pace::take`]), the cap grows by an eighth (at least one).
    fn went(&self, full: bool) {
        if !full {
            return;
        }
        let _ = self
            .docs
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cap| {
                (cap != usize::MAX).then(|| cap.saturating_add((cap / 8).max(1)))
            });
    }
}

/// Sends one claimed segment until every document in it is delivered or dead-lettered; `false`
/// when stopped first (the segment stays in the spool).
async fn deliver(
    es: &Es,
    spool: &Spool,
    seg: &Segment,
    opts: &SendOptions,
    stats: &Stats,
    pace: &Pace,
    stop: watch::Receiver<bool>,
) -> Result<bool, SpoolError> {
    let body = Bytes::from(std::fs::read(&seg.path).map_err(|source| SpoolError::Io {
        path: seg.path.clone(),
        source,
    })?);
    let mut d = Delivery {
        es,
        spool,
        prefix: &opts.prefix,
        stats,
        stop,
        work: vec![body],
        backoff: Duration::from_millis(100),
    };
    while let Some(whole) = d.work.pop() {
        let (body, rest, full) = pace.take(whole);
        if !rest.is_empty() {
            d.work.push(rest);
        }
        if body.is_empty() {
            continue;
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let going = match send(es, &body).await {
            Ok(o) => {
                pace.went(full);
                d.answered(o).await
            }
            Err(e @ EsError::Timeout { .. }) if memchr::memchr_iter(b'\n', &body).nth(2).is_some() => {
                d.timed_out(e, body, pace).await
            }
            Err(e) if about_content(&e) => d.refused_whole(e, body).await,
            Err(e) => {
                stats.failed_requests.fetch_add(1, Ordering::Relaxed);
                stats.failed(
                    es_kind(&e),
                    format!("{e}; the documents wait in the spool and are retried"),
                );
                d.again(body).await
            }
        };
        if !going {
            return Ok(false);
        }
    }
    Ok(true)
}

/// One segment on its way: the bulks still to send, and the pause before a retry. Each step
/// returns `false` when stopped.
struct Delivery<'a> {
    es: &'a Es,
    spool: &'a Spool,
    prefix: &'a str,
    stats: &'a Stats,
    stop: watch::Receiver<bool>,
    work: Vec<Bytes>,
    backoff: Duration,
}

impl Delivery<'_> {
    /// `body` again, after the pause.
    async fn again(&mut self, body: Bytes) -> bool {
        self.work.push(body);
        pause(&mut self.backoff, &mut self.stop).await
    }

    async fn dead_letter(&mut self, refused: &[Refused]) -> bool {
        dead_letter(
            Some(self.es),
            self.spool,
            self.prefix,
            refused,
            self.stats,
            &mut self.stop,
        )
        .await
    }

    /// A bulk answer: the delivered counted, the refused dead-lettered, the rest retried.
    async fn answered(&mut self, o: Outcome) -> bool {
        let stats = self.stats;
        stats.delivered.fetch_add(o.delivered, Ordering::Relaxed);
        if o.delivered > 0 {
            stats.progressed(super::Side::Send);
        }
        for r in &o.refused {
            tracing::warn!(
                "Elasticsearch refused a document ({} {}): dead-lettered",
                r.status,
                r.error["reason"].as_str().unwrap_or("no reason given")
            );
        }
        if !o.refused.is_empty() && !self.dead_letter(&o.refused).await {
            return false;
        }
        if o.retry_docs == 0 {
            self.backoff = Duration::from_millis(100);
            return true;
        }
        stats.retried.fetch_add(o.retry_docs, Ordering::Relaxed);
        if let Some(why) = &o.retry_why {
            stats.failed(
                why.kind,
                format!(
                    "Elasticsearch at {} did not take {} documents ({}); they wait and are retried",
                    self.es.url, o.retry_docs, why.said
                ),
            );
        }
        self.again(Bytes::from(o.retry)).await
    }

    /// A slow node, and more than one document: the same documents again in smaller bulks
    /// (their ids make a bulk it finished after the timeout harmless to resend).
    async fn timed_out(&mut self, e: EsError, body: Bytes, pace: &Pace) -> bool {
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        let docs = pairs(&body).len();
        let cap = pace.slowed(docs);
        self.stats.failed(
            "timeout",
            format!("{e} for a bulk of {docs} documents; they are sent again, {cap} at a time"),
        );
        self.again(body).await
    }

    /// The whole request refused for its content: halves until the document at fault is
    /// alone, which is dead-lettered.
    async fn refused_whole(&mut self, e: EsError, body: Bytes) -> bool {
        self.stats.failed_requests.fetch_add(1, Ordering::Relaxed);
        let docs = pairs(&body);
        if docs.len() > 1 {
            let (a, b) = split(&body);
            self.work.push(b);
            self.work.push(a);
            return true;
        }
        let status = match &e {
            EsError::Status { status, .. } => *status,
            _ => 0,
        };
        let refused: Vec<Refused> = docs
            .into_iter()
            .map(|(a, s)| Refused {
                action: body.slice(a),
                source: body.slice(s),
                status,
                error: serde_json::json!({"type": "request_refused", "reason": e.to_string()}),
            })
            .collect();
        tracing::warn!("{e}: the document at fault is dead-lettered");
        self.dead_letter(&refused).await
    }
}

/// What the loop keeps between turns.
struct Loop {
    slots: Arc<Semaphore>,
    tasks: JoinSet<Result<bool, SpoolError>>,
    /// The segment each task sends, by task id.
    sending: HashMap<tokio::task::Id, Segment>,
    /// Delivered segments whose removal failed (a read-only disk): removed later, never sent
    /// again.
    delivered: Vec<Segment>,
    abandoned: bool,
    pace: Arc<Pace>,
}

impl Loop {
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, Result<bool, SpoolError>), tokio::task::JoinError>,
        spool: &Spool,
        stats: &Stats,
    ) {
        let id = match &done {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some(seg) = self.sending.remove(&id) else {
            return;
        };
        match done {
            Ok((_, Ok(true))) => self.delivered.push(seg),
            Ok((_, Ok(false))) => {
                self.abandoned = true;
                spool.release(&seg);
            }
            Ok((_, Err(e))) => {
                stats.failed(e.kind(), format!("sending {}: {e}; retried", seg.path.display()));
                spool.release(&seg);
            }
            Err(e) => {
                stats.failed("internal", format!("a delivery task failed: {e}; retried"));
                spool.release(&seg);
            }
        }
    }

    /// Removes delivered segments (retried while the disk refuses).
    fn remove_delivered(&mut self, spool: &Spool, stats: &Stats) {
        self.delivered.retain(|seg| match spool.remove(seg) {
            Ok(()) => false,
            Err(e) => {
                stats.failed(e.kind(), format!("removing a delivered segment: {e}; retried"));
                true
            }
        });
    }
}

/// The sender loop: seals by age, keeps up to `max_in_flight` segments in flight. Returns once
/// the spool is empty, if `exit_when_empty` (a replay); once stopped (a closing shipper, which
/// gives up on Elasticsearch failures: what is left stays on disk); or when `give_up_after`
/// passed with no progress.
pub async fn run(
    es: Es,
    spool: Arc<Spool>,
    opts: SendOptions,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
    exit_when_empty: bool,
) -> Result<(), ShipError> {
    let mut l = Loop {
        slots: Arc::new(Semaphore::new(opts.max_in_flight.max(1))),
        tasks: JoinSet::new(),
        sending: HashMap::new(),
        delivered: Vec::new(),
        abandoned: false,
        pace: Arc::new(Pace::default()),
    };
    let mut templates_ok = false;
    let mut backoff = Duration::from_millis(200);
    let started = Instant::now();
    loop {
        let stopping = *stop.borrow();
        let waiting = !l.tasks.is_empty() || !templates_ok;
        if let Some(e) = gave_up(&opts, &stats, &spool, started, waiting) {
            return Err(e);
        }
        let age = if stopping {
            Duration::ZERO
        } else {
            opts.flush_interval
        };
        if let Err(e) = spool.seal_if_older(age) {
            stats.failed(e.kind(), format!("sealing a segment: {e}; retried"));
        }
        l.remove_delivered(&spool, &stats);
        if !templates_ok {
            match templates::ensure(&es, &opts.templates).await {
                Ok(_) => templates_ok = true,
                Err(e) => {
                    stats.failed(
                        es_kind(&e),
                        format!("installing the index templates: {e}; retried"),
                    );
                    if !pause(&mut backoff, &mut stop).await {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        claim(&mut l, &es, &spool, &opts, &stats, &stop);
        while let Some(done) = l.tasks.try_join_next_with_id() {
            l.finished(done, &spool, &stats);
        }
        l.remove_delivered(&spool, &stats);
        let busy = !l.tasks.is_empty() || !l.delivered.is_empty();
        if stopping && l.abandoned && !busy {
            // Elasticsearch failed during shutdown: the rest waits on disk for the next start.
            return Ok(());
        }
        if (stopping || exit_when_empty) && !busy && spool.is_empty().unwrap_or(false) {
            return Ok(());
        }
        tokio::select! {
            _ = spool.changed.notified() => {}
            _ = stop.changed() => {}
            Some(done) = l.tasks.join_next_with_id(), if !l.tasks.is_empty() => l.finished(done, &spool, &stats),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// With `give_up_after`: the error once that long passed with no progress while something
/// waits.
fn gave_up(
    opts: &SendOptions,
    stats: &Stats,
    spool: &Spool,
    started: Instant,
    waiting: bool,
) -> Option<ShipError> {
    let limit = opts.give_up_after?;
    let idle = stats.since_progress().unwrap_or_else(|| started.elapsed());
    (idle > limit && waiting).then(|| {
        ShipError::GaveUp(format!(
            "no progress for {}: {}; the documents stay in {}",
            humantime::format_duration(limit),
            stats
                .snapshot(spool)
                .trouble
                .unwrap_or_else(|| "nothing moved".into()),
            spool.dir().display()
        ))
    })
}

/// Claims segments for every free slot and starts sending them.
fn claim(
    l: &mut Loop,
    es: &Es,
    spool: &Arc<Spool>,
    opts: &SendOptions,
    stats: &Arc<Stats>,
    stop: &watch::Receiver<bool>,
) {
    while let Ok(permit) = l.slots.clone().try_acquire_owned() {
        let seg = match spool.claim() {
            Ok(Some(seg)) => seg,
            Ok(None) => break,
            Err(e) => {
                stats.failed(e.kind(), format!("reading the spool: {e}; retried"));
                break;
            }
        };
        let (es, spool, opts, stats, stop, s, pace) = (
            es.clone(),
            spool.clone(),
            opts.clone(),
            stats.clone(),
            stop.clone(),
            seg.clone(),
            l.pace.clone(),
        );
        let handle = l.tasks.spawn(async move {
            let _permit = permit;
            deliver(&es, &spool, &s, &opts, &stats, &pace, stop).await
        });
        l.sending.insert(handle.id(), seg);
    }
}

/// Sends the dead-letter file's documents again; those refused again stay, with their reason.
pub async fn resend_dead_letters(
    es: &Es,
    spool: &Spool,
    opts: &SendOptions,
    stats: &Stats,
) -> Result<(), ShipError> {
    let path = spool.dir().join(DEAD_LETTERS);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SpoolError::Io { path, source }.into()),
    };
    templates::ensure(es, &opts.templates).await?;
    let letters: Vec<serde_json::Value> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(serde_json::Value::Null))
        .collect();
    let mut kept = Vec::new();
    for chunk in letters.chunks(1000) {
        let mut body = Vec::new();
        for letter in chunk {
            let action = serde_json::json!({"index": {"_index": letter["index"], "_id": letter["id"]}});
            let _ = serde_json::to_writer(&mut body, &action);
            body.push(b'\n');
            body.extend_from_slice(
                letter["document"]
                    .as_str()
                    .unwrap_or("{}")
                    .replace('\n', " ")
                    .as_bytes(),
            );
            body.push(b'\n');
        }
        let body = Bytes::from(body);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let o = send(es, &body).await?;
        stats.delivered.fetch_add(o.delivered, Ordering::Relaxed);
        // What is refused again stays, with the new reason.
        for r in &o.refused {
            let id = serde_json::from_slice::<serde_json::Value>(&r.action).ok();
            let id = id.as_ref().map(|a| &a["index"]["_id"]);
            if let Some(mut letter) = chunk.iter().find(|l| Some(&l["id"]) == id).cloned() {
                letter["status"] = r.status.into();
                letter["error"] = r.error.to_string().into();
                letter["error_type"] = r.error["type"].clone();
                letter["error_reason"] = r.error["reason"].clone();
                let _ = serde_json::to_writer(&mut kept, &letter);
                kept.push(b'\n');
                stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
        }
        for _ in 0..o.retry_docs {
            // Retried items (429, 5xx, the index not writable now): left for the next replay
            // as they were.
            stats.retried.fetch_add(1, Ordering::Relaxed);
        }
        if o.retry_docs > 0 {
            let retry = pairs(&o.retry);
            for (a, _) in retry {
                let id = serde_json::from_slice::<serde_json::Value>(&o.retry[a]).ok();
                let id = id.as_ref().map(|v| &v["index"]["_id"]);
                if let Some(letter) = chunk.iter().find(|l| Some(&l["id"]) == id) {
                    let _ = serde_json::to_writer(&mut kept, letter);
                    kept.push(b'\n');
                }
            }
        }
    }
    spool.rewrite_dead_letters(&kept)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::Pace;

    fn bulk(n: usize) -> Bytes {
        let mut b = String::new();
        for i in 0..n {
            b.push_str(&format!("{{\"index\":{{\"_id\":\"{i}\"}}}}\n{{\"n\":{i}}}\n"));
        }
        Bytes::from(b)
    }

    #[test]
    fn a_timeout_halves_the_bulks_and_answers_in_time_grow_them_back() {
        let pace = Pace::default();
        let (all, rest, _) = pace.take(bulk(100));
        assert_eq!((all, rest.len()), (bulk(100), 0), "no cap before any timeout");
        pace.went(pace.take(bulk(100)).2);
        assert_eq!(pace.take(bulk(100)).1.len(), 0, "success alone sets no cap");

        assert_eq!(pace.slowed(100), 50);
        let (first, rest, _) = pace.take(bulk(100));
        assert_eq!(super::pairs(&first).len(), 50);
        assert_eq!(
            [first, rest].concat(),
            bulk(100).to_vec(),
            "cut on a document's edge"
        );
        assert_eq!(pace.slowed(80), 40, "the smaller cap wins");
        assert_eq!(
            pace.slowed(100),
            40,
            "a late timeout of a bigger bulk lowers nothing"
        );
        pace.went(pace.take(bulk(10)).2);
        assert_eq!(
            super::pairs(&pace.take(bulk(100)).0).len(),
            40,
            "a small bulk proves nothing"
        );
        pace.went(pace.take(bulk(40)).2);
        assert_eq!(super::pairs(&pace.take(bulk(100)).0).len(), 45, "an eighth more");
        assert_eq!(pace.slowed(1), 1, "one document at a time at worst");
        pace.went(pace.take(bulk(1)).2);
        assert_eq!(super::pairs(&pace.take(bulk(100)).0).len(), 2);
    }
}
