//! The benchmark's own S3 bucket: archive digests straight from the store, and removal.

use anyhow::{Context, anyhow};
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;

use super::dev_env::DevEnv;
use crate::digest::{Digest, DigestBuilder};

pub fn client(env: &DevEnv) -> Client {
    let credentials =
        Credentials::new(&env.aws_access_key_id, &env.aws_secret_access_key, None, None, "fastflow-bench");
    // Path style, explicit endpoint and region, checksums only when required: what s3s-fs accepts.
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&env.s3_endpoint)
        .region(Region::new(env.s3_region.clone()))
        .credentials_provider(credentials)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Client::from_conf(config)
}

/// Length and SHA-256 of one object, streamed.
pub async fn digest(client: &Client, bucket: &str, key: &str) -> anyhow::Result<Digest> {
    let mut output = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| anyhow!("S3 GET {bucket}/{key}: {:?}", e.into_service_error()))?;
    let mut digest = DigestBuilder::default();
    while let Some(chunk) = output.body.try_next().await.with_context(|| format!("reading S3 {bucket}/{key}"))? {
        digest.update(&chunk);
    }
    Ok(digest.finish())
}

/// Removes the bucket and everything in it (the 1 GiB archive would stay otherwise).
pub async fn delete_bucket(client: &Client, bucket: &str) -> anyhow::Result<()> {
    loop {
        let listing = match client.list_objects_v2().bucket(bucket).send().await {
            Ok(listing) => listing,
            Err(e) if matches!(e.code(), Some("NoSuchBucket" | "NotFound")) => return Ok(()),
            Err(e) => return Err(anyhow!("S3 list {bucket}: {:?}", e.into_service_error())),
        };
        let keys: Vec<String> = listing.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
        if keys.is_empty() {
            break;
        }
        for key in keys {
            client
                .delete_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .map_err(|e| anyhow!("S3 delete {bucket}/{key}: {:?}", e.into_service_error()))?;
        }
    }
    client
        .delete_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| anyhow!("S3 delete bucket {bucket}: {:?}", e.into_service_error()))?;
    Ok(())
}
