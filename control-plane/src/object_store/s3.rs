//! The S3 backend of [`super::ObjectStore`].
//!
//! Architecture invariant: this is the only module that knows `aws-sdk-s3`. It speaks to any
//! S3-compatible server (AWS, MinIO, SeaweedFS, s3s-fs), which is why the client is built by hand
//! with path-style addressing and checksums only "when required": third-party servers reject or
//! mis-handle the SDK's default CRC trailers (aws-sdk-rust #1240).

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::builders::AbortMultipartUploadFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration};
use bytes::Bytes;
use tokio_util::task::AbortOnDropHandle;

use super::{Error, S3Settings};

/// Size of one multipart part. An [`S3Upload`] holds at most two: the one being filled and
/// the one being sent. S3 wants parts of at least 5 MiB (except the last) and at most 10 000
/// of them: objects up to ~78 GiB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// For [`S3Store::describe`]; `None` means AWS.
    endpoint: Option<String>,
}

impl S3Store {
    /// Builds the client and creates the bucket if it is missing.
    pub async fn connect(settings: &S3Settings) -> Result<S3Store, Error> {
        let credentials =
            Credentials::new(&settings.access_key_id, &settings.secret_access_key, None, None, "fastflow-settings");
        // The attempt timeout ends when response headers arrive, so it bounds one part upload
        // (8 MiB) but not the streaming of a large GET body; stalled-stream protection covers that.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(120))
            .build();
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(true)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(4));
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let store = S3Store {
            client: Client::from_conf(config.build()),
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone(),
        };
        store.ensure_bucket(&settings.region).await?;
        Ok(store)
    }

    async fn ensure_bucket(&self, region: &str) -> Result<(), Error> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(unavailable("head_bucket", &self.bucket, e)),
        }
        let mut create = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the default location and AWS rejects it as an explicit constraint.
        if region != "us-east-1" {
            let location = BucketLocationConstraint::from(region);
            create = create.create_bucket_configuration(
                CreateBucketConfiguration::builder().location_constraint(location).build(),
            );
        }
        match create.send().await {
            Ok(_) => Ok(()),
            // Another replica won the race; HEAD tells whether the bucket is usable by us.
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => {
                self.health().await
            }
            Err(e) => Err(unavailable("create_bucket", &self.bucket, e)),
        }
    }

    pub fn describe(&self) -> String {
        let at = self.endpoint.as_deref().map_or_else(|| "AWS".to_owned(), shared::service_url::redact_url);
        format!("s3 bucket `{}` at {at}", self.bucket)
    }

    pub async fn health(&self) -> Result<(), Error> {
        let head = self.client.head_bucket().bucket(&self.bucket).send().await;
        head.map(drop).map_err(|e| unavailable("head_bucket", &self.bucket, e))
    }

    /// Starts writing one object of any size with bounded memory (see [`S3Upload`]).
    pub async fn begin_upload(&self, key: &str) -> Result<S3Upload, Error> {
        Ok(S3Upload {
            store: self.clone(),
            key: key.to_owned(),
            buf: Vec::with_capacity(PART_SIZE),
            total: 0,
            upload_id: None,
            parts: Vec::new(),
            sending: None,
            broken: false,
        })
    }

    /// Writes a small object in one request.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), Error> {
        let put = self.client.put_object().bucket(&self.bucket).key(key);
        put.body(ByteStream::from(data)).send().await.map(drop).map_err(|e| classify("put_object", key, e))
    }

    /// Streams an object from `from_byte` on. Reading from exactly the end gives an empty
    /// reader, so a follower that has caught up needs no special case.
    pub async fn get_stream(&self, key: &str, from_byte: u64) -> Result<S3Reader, Error> {
        let mut get = self.client.get_object().bucket(&self.bucket).key(key);
        if from_byte > 0 {
            get = get.range(format!("bytes={from_byte}-"));
        }
        match get.send().await {
            Ok(out) => {
                Ok(S3Reader { size: out.content_length().map_or(0, |n| u64::try_from(n).unwrap_or(0)), body: out.body })
            }
            // S3 answers 416 for a range that starts at (or past) the end of the object.
            Err(e) if status(&e) == Some(416) => {
                let size = self.size(key).await?.ok_or_else(|| Error::NotFound { key: key.to_owned() })?;
                if from_byte == size {
                    Ok(S3Reader { size: 0, body: ByteStream::default() })
                } else {
                    Err(Error::InvalidRange { key: key.to_owned(), from_byte, size })
                }
            }
            Err(e) => Err(classify("get_object", key, e)),
        }
    }

    /// Size of an object, `None` if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, Error> {
        let head = self.client.head_object().bucket(&self.bucket).key(key);
        match head.send().await {
            Ok(out) => Ok(Some(out.content_length().map_or(0, |n| u64::try_from(n).unwrap_or(0)))),
            Err(e) => match classify("head_object", key, e) {
                Error::NotFound { .. } => Ok(None),
                e => Err(e),
            },
        }
    }

    /// Deletes an object; deleting a missing key is not an error (S3 semantics).
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        let delete = self.client.delete_object().bucket(&self.bucket).key(key);
        delete.send().await.map(drop).map_err(|e| classify("delete_object", key, e))
    }
}

/// Writer for one object: buffers up to [`PART_SIZE`], then sends a multipart part while the
/// next one fills (one part in flight: the writer's source, e.g. the log stream being
/// archived, is read while the server stores the previous part). Nothing is visible under
/// the key until [`S3Upload::finish`] succeeds; dropping an unfinished upload aborts its
/// multipart upload in the background so its parts do not linger.
pub struct S3Upload {
    store: S3Store,
    key: String,
    buf: Vec<u8>,
    total: u64,
    /// Set once the object outgrows one part.
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    /// The part being sent, in its own task (cancelled when dropped: no part lands after
    /// the upload was given up).
    sending: Option<AbortOnDropHandle<Result<CompletedPart, Error>>>,
    /// A part upload failed or was cancelled: its bytes are gone, so completing would silently
    /// produce a truncated object.
    broken: bool,
}

impl S3Upload {
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        self.check_usable()?;
        while !data.is_empty() {
            // Flush only when more data arrives, so an object of exactly one part is one PUT.
            if self.buf.len() == PART_SIZE {
                self.upload_part().await?;
            }
            let n = data.len().min(PART_SIZE - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            self.total += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Makes the object visible; returns its size in bytes.
    pub async fn finish(mut self) -> Result<u64, Error> {
        self.check_usable()?;
        let Some(upload_id) = self.upload_id.clone() else {
            // Smaller than one part (possibly empty): a single PUT, no multipart bookkeeping.
            let data = Bytes::from(std::mem::take(&mut self.buf));
            self.store.put(&self.key, data).await?;
            return Ok(self.total);
        };
        if !self.buf.is_empty() {
            self.upload_part().await?;
        }
        self.await_sending().await?;
        let parts = CompletedMultipartUpload::builder().set_parts(Some(std::mem::take(&mut self.parts))).build();
        let s = &self.store;
        let complete = s.client.complete_multipart_upload().bucket(&s.bucket).key(&self.key);
        complete
            .upload_id(upload_id)
            .multipart_upload(parts)
            .send()
            .await
            .map_err(|e| classify("complete_multipart_upload", &self.key, e))?;
        self.upload_id = None; // Completed: nothing left for Drop to abort.
        Ok(self.total)
    }

    /// Discards everything written so far. Best effort: a failure is logged, and the parts of
    /// a failed abort are invisible anyway (a bucket lifecycle rule reclaims them).
    pub async fn abort(mut self) {
        if let Some(abort) = self.abort_request()
            && let Err(e) = abort.send().await
        {
            warn_abort_failed(&self.key, &e);
        }
    }

    fn abort_request(&mut self) -> Option<AbortMultipartUploadFluentBuilder> {
        // Cancels a part still being sent.
        self.sending = None;
        let upload_id = self.upload_id.take()?;
        let s = &self.store;
        let abort = s.client.abort_multipart_upload().bucket(&s.bucket).key(&self.key);
        Some(abort.upload_id(upload_id))
    }

    fn check_usable(&self) -> Result<(), Error> {
        if self.broken {
            let msg = format!("upload of {:?} lost a part earlier; abort it", self.key);
            return Err(Error::Unavailable(msg));
        }
        Ok(())
    }

    async fn upload_part(&mut self) -> Result<(), Error> {
        // At most one part in flight: wait for the previous one before sending the next.
        self.await_sending().await?;
        // Cleared only on success, so an error or a cancelled future leaves the upload unusable.
        self.broken = true;
        let s = &self.store;
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let create = s.client.create_multipart_upload().bucket(&s.bucket).key(&self.key);
                let out = create.send().await.map_err(|e| classify("create_multipart_upload", &self.key, e))?;
                let id = out
                    .upload_id()
                    .ok_or_else(|| Error::Unavailable("create_multipart_upload returned no upload id".into()))?;
                self.upload_id = Some(id.to_owned());
                id.to_owned()
            }
        };
        let part_number = self.parts.len() as i32 + 1;
        let data = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PART_SIZE)));
        let upload = s.client.upload_part().bucket(&s.bucket).key(&self.key);
        let request = upload.upload_id(upload_id).part_number(part_number).body(ByteStream::from(data));
        let key = self.key.clone();
        self.sending = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let out = request.send().await.map_err(|e| classify("upload_part", &key, e))?;
            Ok(CompletedPart::builder().part_number(part_number).set_e_tag(out.e_tag).build())
        })));
        self.broken = false;
        Ok(())
    }

    /// Waits for the part in flight, if any, and records it.
    async fn await_sending(&mut self) -> Result<(), Error> {
        let Some(sending) = self.sending.take() else {
            return Ok(());
        };
        // Cleared only on success: a failed or cancelled part leaves the upload unusable.
        self.broken = true;
        let part =
            sending.await.map_err(|e| Error::Unavailable(format!("sending a part of {:?}: {e}", self.key)))??;
        self.parts.push(part);
        self.broken = false;
        Ok(())
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        // Without a runtime (process shutdown) the parts stay until a bucket lifecycle rule
        // removes them; they are never visible as an object either way.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if let Some(abort) = self.abort_request() {
            let key = self.key.clone();
            runtime.spawn(async move {
                if let Err(e) = abort.send().await {
                    warn_abort_failed(&key, &e);
                }
            });
        }
    }
}

fn warn_abort_failed<E>(key: &str, err: &SdkError<E>)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    // NoSuchUpload: already aborted or completed by an earlier attempt.
    if err.code() != Some("NoSuchUpload") {
        let error = DisplayErrorContext(err);
        tracing::warn!(key, %error, "aborting a multipart upload failed");
    }
}

/// Remaining bytes of one object, streamed.
#[derive(Debug)]
pub struct S3Reader {
    /// Bytes left to read when the reader was created.
    pub size: u64,
    body: ByteStream,
}

impl S3Reader {
    /// Next chunk of the body, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, Error> {
        self.body
            .try_next()
            .await
            .map_err(|e| Error::Unavailable(format!("reading object body: {}", DisplayErrorContext(&e))))
    }
}

fn status<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// Maps errors of requests about one key: a 404 without a bucket-level code means the key.
fn classify<E>(op: &str, key: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if status(&err) == Some(404) && !matches!(err.code(), Some("NoSuchBucket" | "NoSuchUpload")) {
        return Error::NotFound { key: key.to_owned() };
    }
    unavailable(op, key, err)
}

/// Builds a short message from the error code, status and server message only: the SDK's
/// request and response dumps stay out of logs.
fn unavailable<E>(op: &str, target: &str, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = match (status(&err), err.code()) {
        (Some(status), Some(code)) => {
            format!("{code} (HTTP {status}): {}", err.message().unwrap_or("no message"))
        }
        (Some(status), None) => format!("HTTP {status}"),
        (None, _) => DisplayErrorContext(&err).to_string(),
    };
    Error::Unavailable(format!("{op} {target:?}: {detail}"))
}
