//! The real services the suite runs against are there, and are what they should be.

use crate::support::{es_url, moto_url};

#[tokio::test]
async fn moto_answers() {
    let body = reqwest::get(format!("{}/moto-api/", moto_url())).await.unwrap();
    assert!(
        body.status().is_success(),
        "moto at {} answered {}",
        moto_url(),
        body.status()
    );
}

#[tokio::test]
async fn opensearch_answers_with_the_elasticsearch_7_10_api() {
    let url = es_url();
    let info: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(info["version"]["distribution"], "opensearch", "{info}");
    assert_eq!(
        info["version"]["minimum_wire_compatibility_version"]
            .as_str()
            .map(|v| v.starts_with('7')),
        Some(true),
        "{info}"
    );
    let health: serde_json::Value = reqwest::get(format!("{url}/_cluster/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        matches!(health["status"].as_str(), Some("green" | "yellow")),
        "{health}"
    );
}
