//! The gateway's reader alone — read, check, encode and frame, as a request does, without HTTP or
//! Kafka — over request bodies from a file (one JSON batch a line), for the two measurements
//! docs/performance.md relies on when the reader changes:
//!
//! - `reader count BODIES`: runs every body through the reader once; under callgrind,
//!   `valgrind --tool=callgrind --toggle-collect='*reader*measure*' target/release/examples/reader count BODIES`
//!   counts exactly the instructions of that work: divide by the events it prints.
//! - `reader digest BODIES`: every event of the bodies, then each member of each event replaced
//!   by null, numbers, strings, escapes, objects, arrays, or removed, read in batches and one by
//!   one; prints a digest of every record written and every rejection's code and message. Two
//!   builds that print the same digest read every one of those events the same way.
//!
//! Bodies: `zcdp simulate --target <a server that saves them>`, or any batches of real traffic.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use ingest::validate::{Checked, read_batch, read_one};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, path) = match args.as_slice() {
        [_, mode, path] => (mode.as_str(), path.as_str()),
        _ => anyhow::bail!("usage: reader count|digest BODIES"),
    };
    let bodies: Vec<String> = std::fs::read_to_string(path)?.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    match mode {
        "count" => {
            // Once outside the measured call: the schema registry is built on first use.
            warm_up(&bodies[..1]);
            let (events, bytes) = measure(&bodies);
            println!("{events} events, {bytes} record bytes");
        }
        "digest" => digest(&bodies)?,
        _ => anyhow::bail!("unknown mode {mode}"),
    }
    Ok(())
}

#[inline(never)]
fn warm_up(bodies: &[String]) -> (usize, usize) {
    run(bodies)
}

#[inline(never)]
fn measure(bodies: &[String]) -> (usize, usize) {
    run(bodies)
}

/// Reads, checks, encodes and frames every event of every body, as a request does.
fn run(bodies: &[String]) -> (usize, usize) {
    let (mut events, mut bytes) = (0, 0);
    let mut buf = Vec::with_capacity(1024);
    for body in bodies {
        let batch = read_batch(body, "demo").expect("a readable batch");
        events += batch.count;
        for c in &batch.events.checked {
            if let Checked::Accepted(_, e) = c {
                e.frame(&batch.events.buf, &e.times(None, 1_764_000_000_000), schemas::event::Trust::Unverified, &mut buf);
                bytes += buf.len();
            }
        }
    }
    (events, bytes)
}

/// Each member of `v` (recursively) replaced by each of `values`, or removed.
fn mutations(v: &Value, out: &mut Vec<Value>) {
    let values = [
        Value::Null,
        json!(0),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!(9_223_372_036_854_775_807_i64),
        json!(""),
        json!("x"),
        json!("{{name}}"),
        json!("é\n\"\\\u{0001}🙂"),
        json!("2026-11-23T09:30:01+07:00"),
        json!("0987654321"),
        json!({}),
        json!([]),
        json!([{"product_id": "p", "quantity": 1, "price": 1}]),
        json!(true),
        json!("x".repeat(600)),
    ];
    fn walk(root: &Value, path: &mut Vec<String>, values: &[Value], out: &mut Vec<Value>) {
        let Some(obj) = at(root, path).and_then(Value::as_object) else { return };
        let keys: Vec<String> = obj.keys().cloned().collect();
        for k in keys {
            for v in values {
                let mut m = root.clone();
                at_mut(&mut m, path).unwrap().as_object_mut().unwrap().insert(k.clone(), v.clone());
                out.push(m);
            }
            let mut m = root.clone();
            at_mut(&mut m, path).unwrap().as_object_mut().unwrap().remove(&k);
            out.push(m);
            path.push(k);
            walk(root, path, values, out);
            path.pop();
        }
    }
    fn at<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
        path.iter().try_fold(v, |v, k| v.get(k))
    }
    fn at_mut<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
        path.iter().try_fold(v, |v, k| v.get_mut(k))
    }
    walk(v, &mut Vec::new(), &values, out);
}

fn digest(bodies: &[String]) -> anyhow::Result<()> {
    let mut originals: Vec<Value> = Vec::new();
    for b in bodies {
        let v: Value = serde_json::from_str(b)?;
        originals.extend(v["events"].as_array().cloned().unwrap_or_default());
    }
    // Every event of the bodies as it is; mutations of the first of each type and of the first
    // hundred events.
    let mut events = originals.clone();
    let mut types = BTreeSet::new();
    for (i, e) in originals.iter().enumerate() {
        if types.insert(e["type"].as_str().unwrap_or_default().to_string()) || i < 100 {
            mutations(e, &mut events);
        }
    }
    let mut h = Sha256::new();
    let (mut accepted, mut rejected, mut unreadable) = (0, 0, 0);
    let mut buf = Vec::new();
    let mut note = |h: &mut Sha256, checked: &[Checked<'_>], parts: &[u8]| {
        for c in checked {
            match c {
                Checked::Accepted(_, e) => {
                    accepted += 1;
                    e.frame(parts, &e.times(Some(1_764_000_000_500), 1_764_000_001_000), schemas::event::Trust::Unverified, &mut buf);
                    h.update(e.topic.name());
                    h.update(e.key(parts));
                    h.update(&buf);
                }
                Checked::Rejected(_, r) => {
                    rejected += 1;
                    h.update(r.code.as_str());
                    h.update(&r.message);
                }
            }
        }
    };
    for chunk in events.chunks(50) {
        let body = json!({"sent_at": "2026-11-23T09:30:05+07:00", "events": chunk}).to_string();
        match read_batch(&body, "demo") {
            Ok(b) => note(&mut h, &b.events.checked, &b.events.buf),
            Err(e) => {
                unreadable += 1;
                h.update(e);
            }
        }
    }
    for e in &events {
        match read_one(&e.to_string(), "demo") {
            Ok(one) => note(&mut h, &one.checked, &one.buf),
            Err(err) => {
                unreadable += 1;
                h.update(err.to_string());
            }
        }
    }
    println!(
        "{} events (each in a batch and alone): {accepted} accepted, {rejected} rejected, {unreadable} unreadable; digest {}",
        events.len(),
        hex::encode(h.finalize())
    );
    Ok(())
}
