//! Reading the run-log archive straight from the S3 server.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::config::DevEnv;

/// Length and SHA-256 (hex) of a byte sequence, computed while streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub len: u64,
    pub sha256: String,
}

/// Accumulates a [`Digest`] chunk by chunk.
#[derive(Default)]
pub(crate) struct DigestBuilder {
    len: u64,
    hasher: Sha256,
}

impl DigestBuilder {
    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.hasher.update(chunk);
    }

    pub(crate) fn finish(self) -> Digest {
        Digest { len: self.len, sha256: hex::encode(self.hasher.finalize()) }
    }
}

pub(crate) fn client(env: &DevEnv) -> Client {
    let credentials =
        Credentials::new(&env.aws_access_key_id, &env.aws_secret_access_key, None, None, "fastflow-tests");
    // Path style + explicit endpoint/region + checksums only when required:
    // what s3s-fs (and MinIO) accept (aws-sdk-rust #1240).
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

/// The object's bytes, or `None` when it does not exist.
pub(crate) async fn get(client: &Client, bucket: &str, key: &str) -> Option<Bytes> {
    let output = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(output) => output,
        Err(e) if is_not_found(e.code()) => return None,
        Err(e) => panic!("S3 GET {bucket}/{key} failed: {:?}", e.into_service_error()),
    };
    let body =
        output.body.collect().await.unwrap_or_else(|e| panic!("S3 GET {bucket}/{key}: reading the body failed: {e}"));
    Some(body.into_bytes())
}

/// Length and SHA-256 of the object, streamed; `None` when it does not exist.
pub(crate) async fn digest(client: &Client, bucket: &str, key: &str) -> Option<Digest> {
    let mut output = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(output) => output,
        Err(e) if is_not_found(e.code()) => return None,
        Err(e) => panic!("S3 GET {bucket}/{key} failed: {:?}", e.into_service_error()),
    };
    let mut digest = DigestBuilder::default();
    while let Some(chunk) =
        output.body.try_next().await.unwrap_or_else(|e| panic!("S3 GET {bucket}/{key}: reading the body failed: {e}"))
    {
        digest.update(&chunk);
    }
    Some(digest.finish())
}

fn is_not_found(code: Option<&str>) -> bool {
    matches!(code, Some("NoSuchKey" | "NoSuchBucket" | "NotFound"))
}

/// Creates `bucket` (the control plane creates the tests' buckets at its start; a test
/// that removed one to make the log store refuse writes puts it back with this).
pub(crate) async fn create_bucket(client: &Client, bucket: &str) -> Result<(), String> {
    client.create_bucket().bucket(bucket).send().await.map_err(|e| format!("{:?}", e.into_service_error()))?;
    Ok(())
}

/// Best-effort removal of a test bucket and everything in it (the big-output test
/// alone leaves ~200 MB behind otherwise).
pub(crate) async fn delete_bucket(client: &Client, bucket: &str) -> Result<(), String> {
    loop {
        let listing = match client.list_objects_v2().bucket(bucket).send().await {
            Ok(listing) => listing,
            Err(e) if is_not_found(e.code()) => return Ok(()),
            Err(e) => return Err(format!("{:?}", e.into_service_error())),
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
                .map_err(|e| format!("{:?}", e.into_service_error()))?;
        }
    }
    client.delete_bucket().bucket(bucket).send().await.map_err(|e| format!("{:?}", e.into_service_error()))?;
    Ok(())
}
