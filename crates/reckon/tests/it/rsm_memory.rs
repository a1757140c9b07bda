//! RSM's training memory does not grow with depth: the warm-up outer steps keep no graph, so a training step at
//! H = 16 peaks within 10% of one at H = 4 (same L, batch and width). Each depth runs in its own `reckon bench`
//! process, so one measurement's freed-but-kept memory cannot hide the other's peak.

use std::process::Command;

fn peak_training_rss_mb(shape: &str, dir: &std::path::Path) -> f64 {
    let json = dir.join(format!("{shape}.jsonl"));
    let out = Command::new(env!("CARGO_BIN_EXE_reckon"))
        .args(["bench", "train", "--shape", shape, "--mode", "train", "--warmup", "1", "--steps", "2", "--json"])
        .arg(&json)
        .output()
        .expect("reckon runs");
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let line = std::fs::read_to_string(&json).unwrap();
    let r: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    r["reckon"][0]["peak_rss_mb"].as_f64().unwrap()
}

#[test]
fn training_memory_at_h16_is_within_10_percent_of_h4() {
    let tmp = tempfile::tempdir().unwrap();
    let h4 = peak_training_rss_mb("rsm-h4", tmp.path());
    let h16 = peak_training_rss_mb("rsm-h16", tmp.path());
    assert!(h4 > 0.0 && h16 > 0.0);
    assert!(h16 <= 1.10 * h4, "peak training RSS grows with depth: H=4 {h4:.1} MB, H=16 {h16:.1} MB");
    println!("peak training RSS: H=4 {h4:.1} MB, H=16 {h16:.1} MB ({:+.1}%)", 100.0 * (h16 / h4 - 1.0));
}
