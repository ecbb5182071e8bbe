//! SDK-level tests of the CloudWatch sink, without a server: the real SDK client with a mocked
//! transport (`aws-smithy-mocks`) or a request-capturing HTTP client.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_sdk_cloudwatch::config::{Credentials, Region};
use aws_sdk_cloudwatch::operation::put_metric_data::{PutMetricDataError, PutMetricDataOutput};
use aws_sdk_cloudwatch::Client;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use lambda_memory_profiler::config::DimensionSet;
use lambda_memory_profiler::config::StorageResolution;
use lambda_memory_profiler::metrics::{Datum, Dimensions, Metric, METRICS};
use lambda_memory_profiler::sinks::cloudwatch::{self, CloudWatchSink};
use std::io::Read;
use std::sync::{Arc, Mutex};

fn dims() -> Dimensions {
    Dimensions::new(
        DimensionSet {
            function_version: true,
        },
        "orders",
        "3",
    )
}

fn invocations(n: usize, start_ms: u64) -> Vec<Datum> {
    (0..n)
        .flat_map(|i| {
            Metric::ALL.iter().map(move |m| Datum {
                metric: *m,
                value: (i % 200) as f64 + 0.5,
                timestamp_ms: start_ms + i as u64 * 60_000,
            })
        })
        .collect()
}

fn sink(client: Client) -> CloudWatchSink {
    CloudWatchSink::new("LMP/Test".into(), dims(), StorageResolution::Standard).with_client(client)
}

#[tokio::test]
async fn request_shape_namespace_dimensions_and_values() {
    let seen: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
    let seen2 = seen.clone();
    let rule = mock!(Client::put_metric_data)
        .match_requests(move |req| {
            let data = req.metric_data();
            let ok = req.namespace() == Some("LMP/Test")
                // Every figure twice: under {FunctionName} and {FunctionName, FunctionVersion}.
                && data.chunks(2).all(|pair| {
                    pair.len() == 2
                        && pair[0].metric_name() == pair[1].metric_name()
                        && pair[0].dimensions().len() == 1
                        && pair[1].dimensions().len() == 2
                        && pair[1].dimensions()[1].value() == Some("3")
                })
                && data.iter().all(|d| {
                    d.dimensions()[0].name() == Some("FunctionName")
                        && d.dimensions()[0].value() == Some("orders")
                        && d.values().len() == d.counts().len()
                        && d.unit().is_some()
                        && d.storage_resolution() == Some(60)
                });
            seen2
                .lock()
                .unwrap()
                .push((req.namespace().unwrap_or_default().to_string(), data.len()));
            ok
        })
        .then_output(|| PutMetricDataOutput::builder().build());
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule]);
    let mut s = sink(client);
    // 3 invocations in the same minute with equal values → one datum per metric, count 3.
    let mut datums = invocations(1, 1_764_000_000_000);
    datums.extend(invocations(1, 1_764_000_000_100));
    datums.extend(invocations(1, 1_764_000_000_200));
    let r = s.send(&datums).await;
    assert_eq!(r.requests, 1);
    assert_eq!(r.failed_requests, 0);
    assert_eq!(r.sent_values, 3 * METRICS.len() as u64);
    assert_eq!(rule.num_calls(), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![("LMP/Test".to_string(), 2 * METRICS.len())]
    );
}

#[tokio::test]
async fn large_flush_is_split_into_api_sized_requests() {
    let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let sizes2 = sizes.clone();
    let rule = mock!(Client::put_metric_data)
        .match_requests(move |req| {
            sizes2.lock().unwrap().push(req.metric_data().len());
            true
        })
        .then_output(|| PutMetricDataOutput::builder().build());
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, [&rule]);
    let mut s = sink(client);
    // 120 distinct minutes × the metrics × 2 dimension sets → requests of at most 1,000.
    let datums = invocations(120, 1_764_000_000_000);
    let r = s.send(&datums).await;
    let sizes = sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 2 * 120 * METRICS.len());
    assert!(sizes.iter().all(|n| *n <= 1_000), "{sizes:?}");
    let least = (2 * 120 * METRICS.len()).div_ceil(1_000);
    assert!(
        sizes.len() >= least && sizes.len() <= least + 1,
        "{sizes:?}"
    );
    assert_eq!(r.requests, sizes.len() as u64);
    assert_eq!(r.sent_values, 120 * METRICS.len() as u64);
}

#[tokio::test]
async fn retries_on_5xx_then_succeeds() {
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .http_status(503, None)
        .times(2)
        .output(|| PutMetricDataOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&rule], |c| {
        c.retry_config(cloudwatch::retry_config())
    });
    let r = sink(client).send(&invocations(1, 0)).await;
    assert_eq!(rule.num_calls(), 3);
    assert_eq!(r.failed_requests, 0);
    assert_eq!(r.sent_values, METRICS.len() as u64);
}

#[tokio::test]
async fn retries_on_throttling_then_succeeds() {
    let throttled = || {
        PutMetricDataError::generic(
            aws_sdk_cloudwatch::error::ErrorMetadata::builder()
                .code("Throttling")
                .message("Rate exceeded")
                .build(),
        )
    };
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .error(throttled)
        .output(|| PutMetricDataOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&rule], |c| {
        c.retry_config(cloudwatch::retry_config())
    });
    let r = sink(client).send(&invocations(1, 0)).await;
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(r.failed_requests, 0);
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_counts_the_loss() {
    let rule = mock!(Client::put_metric_data)
        .sequence()
        .http_status(500, None)
        .repeatedly()
        .build();
    let client = mock_client!(aws_sdk_cloudwatch, RuleMode::Sequential, [&rule], |c| {
        c.retry_config(cloudwatch::retry_config())
    });
    let r = sink(client).send(&invocations(1, 0)).await;
    assert_eq!(rule.num_calls(), 4, "max_attempts");
    assert_eq!(r.failed_requests, 1);
    assert_eq!(r.failed_values, METRICS.len() as u64);
}

#[tokio::test]
async fn wire_request_is_cbor_put_metric_data_gzipped() {
    let (http, rx) = aws_smithy_http_client::test_util::capture_request(None);
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::for_tests())
        .http_client(http)
        .retry_config(aws_sdk_cloudwatch::config::retry::RetryConfig::disabled())
        .build();
    let mut s = sink(Client::from_conf(conf));
    // Enough distinct values that the body passes the SDK's compression threshold (10 KiB).
    let datums: Vec<Datum> = (0..600)
        .map(|i| Datum {
            metric: Metric::RuntimeRss,
            value: 1e6 + i as f64,
            timestamp_ms: 1_764_000_000_000,
        })
        .collect();
    let _ = s.send(&datums).await;
    let req = rx.expect_request();
    assert!(
        req.uri()
            .ends_with("/service/GraniteServiceVersion20100801/operation/PutMetricData"),
        "{}",
        req.uri()
    );
    assert_eq!(req.headers().get("smithy-protocol"), Some("rpc-v2-cbor"));
    assert_eq!(req.headers().get("content-encoding"), Some("gzip"));
    assert!(req.headers().get("authorization").is_some(), "signed");
    let body = req.body().bytes().expect("in-memory body");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut plain)
        .expect("gzip body");
    assert!(plain.len() > body.len(), "compressed");
    // CBOR keeps text strings verbatim.
    for needle in ["LMP/Test", "RuntimeRss", "FunctionName", "orders", "Bytes"] {
        assert!(
            plain.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} not in body"
        );
    }
}
