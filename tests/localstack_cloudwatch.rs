//! The built extension under the emulator (real awslambdaric, real decorator) publishing to
//! LocalStack as CloudWatch with the default sink and flush mode; the metrics are read back with
//! GetMetricData and compared with what the platform reported for those invocations.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use aws_sdk_cloudwatch::config::{Credentials, Region};
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
use aws_sdk_cloudwatch::Client;
use lambda_emulator::{Emulator, InvokeStatus};
use std::time::{Duration, SystemTime};

fn reader(endpoint: &str) -> Client {
    use aws_smithy_http_client::{tls, Builder};
    let http = Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let conf = aws_sdk_cloudwatch::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .http_client(http)
        .build();
    Client::from_conf(conf)
}

/// `stat` of `metric` over the last hour, summed over the returned periods (or max / min).
async fn stat(cw: &Client, ns: &str, metric: &str, stat: &str) -> Vec<f64> {
    let now = SystemTime::now();
    let q = MetricDataQuery::builder()
        .id("q")
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(ns)
                        .metric_name(metric)
                        .dimensions(
                            Dimension::builder()
                                .name("FunctionName")
                                .value("lmp-it")
                                .build(),
                        )
                        .dimensions(
                            Dimension::builder()
                                .name("FunctionVersion")
                                .value("$LATEST")
                                .build(),
                        )
                        .build(),
                )
                .period(60)
                .stat(stat)
                .build(),
        )
        .build();
    let out = cw
        .get_metric_data()
        .metric_data_queries(q)
        .start_time(DateTime::from(now - Duration::from_secs(3600)))
        .end_time(DateTime::from(now + Duration::from_secs(600)))
        .send()
        .await
        .expect("GetMetricData");
    out.metric_data_results()
        .iter()
        .flat_map(|r| r.values().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_arrive_in_cloudwatch_with_the_right_values_and_dimensions() {
    let py = common::python();
    let dir = common::temp_dir("localstack");
    let Some(ls) = common::LocalStack::start(&dir) else {
        return;
    };
    let ns = format!("LmpIt{}", std::process::id());
    let mut env = common::aws_env(&ls.endpoint());
    env.extend([
        ("LMP_INTAKE_PORT", common::free_port().to_string()),
        ("LMP_SAMPLE_RATE", "1".into()),
        ("LMP_NAMESPACE", ns.clone()),
        ("LMP_DIMENSIONS", "FunctionName,FunctionVersion".into()),
    ]);
    let em = Emulator::start(common::config(py, &dir, common::DECORATED, &env))
        .await
        .expect("emulator starts");
    let mut reports = Vec::new();
    for i in 0..3 {
        let out = em
            .invoke(serde_json::json!({ "i": i }))
            .await
            .expect("invoke");
        assert_eq!(out.status, InvokeStatus::Success, "{out:?}");
        reports.push(out.report.clone());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, ext) = common::shut_down(em).await;
    assert_eq!(ext.exit.code, Some(0), "{:?}", ext.exit);
    assert!(
        !ext.exit.killed_at_deadline,
        "flushed and exited before the deadline"
    );
    eprintln!(
        "post-runtime per invoke: {:?}; SHUTDOWN to exit: {:?}; peak RSS {} bytes",
        ext.post_runtime, ext.exit.exit_after_shutdown, ext.peak_rss_bytes
    );

    let cw = reader(&ls.endpoint());
    let max_used = reports
        .iter()
        .map(|r| r["metrics"]["maxMemoryUsedMB"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let sum = |v: Vec<f64>| v.iter().sum::<f64>();
    assert_eq!(
        sum(stat(&cw, &ns, "MaxMemoryUsed", "SampleCount").await),
        3.0
    );
    let got_max = stat(&cw, &ns, "MaxMemoryUsed", "Maximum").await;
    assert_eq!(got_max.iter().cloned().fold(0.0, f64::max), max_used);
    assert_eq!(stat(&cw, &ns, "MemorySize", "Maximum").await, vec![256.0]);
    assert_eq!(sum(stat(&cw, &ns, "Duration", "SampleCount").await), 3.0);
    let want_dur: f64 = reports
        .iter()
        .map(|r| r["metrics"]["durationMs"].as_f64().unwrap())
        .sum();
    let got_dur = sum(stat(&cw, &ns, "Duration", "Sum").await);
    assert!((got_dur - want_dur).abs() < 1e-6, "{got_dur} vs {want_dur}");
    assert_eq!(sum(stat(&cw, &ns, "ColdStart", "Sum").await), 1.0);
    assert_eq!(sum(stat(&cw, &ns, "OutOfMemory", "Sum").await), 0.0);
    assert_eq!(sum(stat(&cw, &ns, "RuntimeRss", "SampleCount").await), 3.0);
    let retained_min = stat(&cw, &ns, "PythonHeapRetained", "Minimum").await;
    assert!(
        !retained_min.is_empty() && retained_min.iter().all(|v| *v >= 1_048_576.0),
        "{retained_min:?}"
    );
    assert!(sum(stat(&cw, &ns, "ExtensionRss", "SampleCount").await) >= 1.0);
    drop(ls);
}
