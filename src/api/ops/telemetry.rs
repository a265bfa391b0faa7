//! Logs (text or JSON lines on stderr) and traces (OpenTelemetry over OTLP/HTTP): one
//! `tracing` subscriber. Spans are the request (`ops::request`) and each source call
//! (`record::source`); the W3C trace context propagator reads and writes
//! `traceparent`. Span fields are routes, methods, statuses, source and entity names:
//! nothing personal.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps the trace exporter running; dropping it sends what is left.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Send the spans still buffered (tests, shutdown).
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

pub type Subscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// The subscriber for `config`: `RUST_LOG` (default `info`) filters the log lines;
/// traces take the gateway's own spans at info and above whatever the log filter.
pub fn subscriber(config: &TelemetryConfig) -> Result<(Subscriber, Telemetry), String> {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            // The spans from the request down: each line has its request id.
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (traces, provider) = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint.clone())
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_timeout(std::time::Duration::from_secs(5))
                .with_headers(Default::default())
                .build()
                .map_err(|e| format!("OTLP exporter to {endpoint}: {e}"))?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(
                    config
                        .service_name
                        .clone()
                        .unwrap_or_else(|| "escr-gateway".into()),
                )
                .build();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build();
            let layer = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("escr-gateway"))
                .with_filter(Targets::new().with_target("escr_gateway", LevelFilter::INFO));
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let subscriber = tracing_subscriber::registry().with(logs).with(traces);
    Ok((Box::new(subscriber), Telemetry { provider }))
}
