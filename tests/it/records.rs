//! Reading many deploy records from S3 for the delivery report: only those of the window,
//! newest first, with a bounded number of `GetObject`s in flight.

use aws_adapters::S3ArtifactStore;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use pipeline_core::ReleaseRecords;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tugboat_tests::aws::AwsFixture;
use tugboat_tests::records::{put_records, sample_records};

const BUCKET: &str = "cv-matcher-deployments";

/// The most record reads (`GET …/records/*.json`) in flight at once.
#[derive(Debug, Default)]
struct InFlight {
    now: AtomicUsize,
    most: AtomicUsize,
    reads: AtomicUsize,
}

#[derive(Debug, Clone)]
struct CountInFlight(Arc<InFlight>);

/// Marks an attempt that is a record read: after the transmit the request is gone.
#[derive(Debug, Clone)]
struct RecordRead;

impl Storable for RecordRead {
    type Storer = StoreReplace<Self>;
}

fn is_record_read(method: &str, uri: &str) -> bool {
    method == "GET"
        && uri
            .split('?')
            .next()
            .is_some_and(|path| path.ends_with(".json"))
}

impl Intercept for CountInFlight {
    fn name(&self) -> &'static str {
        "CountInFlight"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        if is_record_read(request.method(), request.uri()) {
            cfg.interceptor_state().store_put(RecordRead);
            let now = self.0.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.0.most.fetch_max(now, Ordering::SeqCst);
            self.0.reads.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn read_after_transmit(
        &self,
        _: &BeforeDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<RecordRead>().is_some() {
            self.0.now.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_since_reads_only_the_window_with_bounded_concurrency() -> anyhow::Result<()> {
    let aws = AwsFixture::start().await?;
    aws.clients.s3.create_bucket().bucket(BUCKET).send().await?;
    let writer = Arc::new(S3ArtifactStore::new(
        aws.clients.s3.clone(),
        BUCKET,
        "tugboat",
    ));
    let now = chrono::Utc::now();
    // 120 releases, one every 6 hours: the last 10 days hold 40 of them.
    let records = sample_records(
        "cv-matcher",
        "production",
        120,
        now - chrono::Duration::minutes(1),
        chrono::Duration::hours(6),
    );
    put_records(writer, records.clone(), 8).await?;

    let in_flight = Arc::new(InFlight::default());
    let config = aws
        .clients
        .s3
        .config()
        .to_builder()
        .interceptor(CountInFlight(in_flight.clone()))
        .build();
    let store = S3ArtifactStore::new(aws_sdk_s3::Client::from_conf(config), BUCKET, "tugboat");
    let since = now - chrono::Duration::days(10);
    let read = store
        .records_since("cv-matcher", "production", since)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;

    let mut expected: Vec<_> = records
        .iter()
        .filter(|r| r.started_at >= since)
        .map(|r| r.release_id.clone())
        .collect();
    expected.reverse();
    let ids: Vec<_> = read.iter().map(|r| r.release_id.clone()).collect();
    assert_eq!(ids.len(), 40);
    assert_eq!(ids, expected, "the window's records, newest first");
    assert_eq!(read.first(), records.last(), "read back as written");
    let reads = in_flight.reads.load(Ordering::SeqCst);
    assert_eq!(reads, 40, "records older than the window are not read");
    let most = in_flight.most.load(Ordering::SeqCst);
    assert!(
        (2..=16).contains(&most),
        "reads run side by side, at most 16 at once: {most}"
    );

    // history keeps its promise on the same store: the newest `limit`.
    let newest = store
        .history("cv-matcher", "production", 3)
        .await
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let newest: Vec<_> = newest.iter().map(|r| r.release_id.clone()).collect();
    assert_eq!(newest, expected[..3].to_vec());
    Ok(())
}
