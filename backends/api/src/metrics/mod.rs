//! The Prometheus exposition: the families of the [`catalogue`], encoded by prometheus-client.
//!
//! The values live elsewhere (the driver's snapshot, the atomics of the control server, of the
//! authorization layer, of the health watchers) and are read when a scrape asks. Each owner
//! implements [`Source`], which writes its families through [`Families`]; [`Scrape`] turns a
//! source into a prometheus-client [`Collector`], and [`exposition`] encodes a registry of
//! them in the Prometheus text format (0.0.4). Nothing here formats Prometheus text by hand.

pub mod catalogue;

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use self::catalogue::{Family, Kind};

/// The `Content-Type` of [`exposition`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Something that holds values of catalogue families and writes them at scrape time.
pub trait Source {
    /// Writes this source's families.
    ///
    /// # Errors
    ///
    /// When a family is written with another type or number of labels than the catalogue
    /// gives it, or when the encoder fails.
    fn write(&self, families: &mut Families<'_, '_>) -> fmt::Result;
}

impl<T: Source + ?Sized> Source for std::sync::Arc<T> {
    fn write(&self, families: &mut Families<'_, '_>) -> fmt::Result {
        self.as_ref().write(families)
    }
}

/// A [`Source`] as a prometheus-client [`Collector`]: read on every encoding of the registry
/// it is registered with.
#[derive(Debug)]
pub struct Scrape<T>(pub T);

impl<T: Source + fmt::Debug + Send + Sync + 'static> Collector for Scrape<T> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        self.0.write(&mut Families {
            encoder: &mut encoder,
        })
    }
}

/// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]) of a registry holding
/// `collectors`, in order.
///
/// # Errors
///
/// When a source writes a family against the catalogue (see [`Source::write`]).
pub fn exposition(collectors: Vec<Box<dyn Collector>>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    for collector in collectors {
        registry.register_collector(collector);
    }
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

/// The exposition of one source.
///
/// # Errors
///
/// As [`exposition`].
pub fn encode<T: Source + fmt::Debug + Send + Sync + 'static>(
    source: T,
) -> Result<String, fmt::Error> {
    exposition(vec![Box::new(Scrape(source))])
}

/// The writer of catalogue families that a [`Source`] is given: each call writes one family,
/// its `# HELP` and `# TYPE` from the catalogue and one sample per label set.
#[derive(Debug)]
pub struct Families<'a, 'e> {
    encoder: &'a mut DescriptorEncoder<'e>,
}

static SECONDS: Unit = Unit::Seconds;
static BYTES: Unit = Unit::Bytes;

impl Families<'_, '_> {
    /// A counter without labels.
    ///
    /// # Errors
    ///
    /// As [`Source::write`].
    pub fn counter(&mut self, family: &'static Family, value: u64) -> fmt::Result {
        self.counters(family, [([], value)])
    }

    /// A counter, one sample per label values (in the catalogue's label order).
    ///
    /// # Errors
    ///
    /// As [`Source::write`].
    pub fn counters<'v, const N: usize>(
        &mut self,
        family: &'static Family,
        samples: impl IntoIterator<Item = ([&'v str; N], u64)>,
    ) -> fmt::Result {
        let samples = samples
            .into_iter()
            .map(|(labels, value)| (labels, ConstCounter::new(value)));
        self.write(family, Kind::Counter, samples)
    }

    /// A gauge without labels.
    ///
    /// # Errors
    ///
    /// As [`Source::write`].
    pub fn gauge(
        &mut self,
        family: &'static Family,
        value: impl EncodeGaugeValue + fmt::Debug,
    ) -> fmt::Result {
        self.gauges(family, [([], value)])
    }

    /// A gauge, one sample per label values (in the catalogue's label order).
    ///
    /// # Errors
    ///
    /// As [`Source::write`].
    pub fn gauges<'v, const N: usize, V: EncodeGaugeValue + fmt::Debug>(
        &mut self,
        family: &'static Family,
        samples: impl IntoIterator<Item = ([&'v str; N], V)>,
    ) -> fmt::Result {
        let samples = samples
            .into_iter()
            .map(|(labels, value)| (labels, ConstGauge::new(value)));
        self.write(family, Kind::Gauge, samples)
    }

    /// A histogram, one series per label values (in the catalogue's label order).
    ///
    /// # Errors
    ///
    /// As [`Source::write`].
    pub fn histograms<'v, 'h, const N: usize>(
        &mut self,
        family: &'static Family,
        series: impl IntoIterator<Item = ([&'v str; N], Histogram<'h>)>,
    ) -> fmt::Result {
        self.write(family, Kind::Histogram, series)
    }

    fn write<'v, const N: usize, M: EncodeMetric>(
        &mut self,
        family: &'static Family,
        kind: Kind,
        samples: impl IntoIterator<Item = ([&'v str; N], M)>,
    ) -> fmt::Result {
        if family.kind != kind || family.labels.len() != N {
            tracing::error!(
                family = family.name,
                "a metric family written against the catalogue"
            );
            return Err(fmt::Error);
        }
        let unit = family.unit.map(|unit| match unit {
            catalogue::Unit::Seconds => &SECONDS,
            catalogue::Unit::Bytes => &BYTES,
        });
        let metric_type = match kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        let mut encoder: MetricEncoder<'_> =
            self.encoder
                .encode_descriptor(family.stem(), family.help, unit, metric_type)?;
        for (values, metric) in samples {
            let labels: [(&str, &str); N] = std::array::from_fn(|i| (family.labels[i], values[i]));
            metric.encode(encoder.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The buckets of a histogram as its owner keeps them: per bucket (not cumulative), one more
/// than `bounds` (the last counts what is above every bound).
#[derive(Clone, Copy, Debug)]
pub struct Histogram<'a> {
    /// The upper bounds of the buckets.
    pub bounds: &'a [Duration],
    /// The count of each bucket.
    pub buckets: &'a [u64],
    /// The sum of the observations.
    pub sum: Duration,
    /// The number of observations.
    pub count: u64,
}

impl EncodeMetric for Histogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> fmt::Result {
        let bounds = self
            .bounds
            .iter()
            .map(Duration::as_secs_f64)
            .chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(self.buckets.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum.as_secs_f64(), self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::catalogue::{GOSSIP_PROBE_RTT, TRANSPORT_CHANNEL_DATAGRAMS};
    use super::*;

    #[derive(Debug)]
    struct Fixed(fn(&mut Families<'_, '_>) -> fmt::Result);

    impl Source for Fixed {
        fn write(&self, families: &mut Families<'_, '_>) -> fmt::Result {
            (self.0)(families)
        }
    }

    /// The text is the Prometheus 0.0.4 form the hand-written exposition had: HELP and TYPE
    /// name the series (`_total` included), labels in catalogue order, cumulative buckets.
    #[test]
    fn families_are_written_as_the_catalogue_says() {
        let text = encode(Fixed(|f| {
            f.counters(&TRANSPORT_CHANNEL_DATAGRAMS, [(["lease", "sent"], 3)])?;
            f.histograms(
                &GOSSIP_PROBE_RTT,
                [(
                    [],
                    Histogram {
                        bounds: &[Duration::from_micros(100), Duration::from_secs(1)],
                        buckets: &[1, 2, 3],
                        sum: Duration::from_millis(1500),
                        count: 6,
                    },
                )],
            )
        }))
        .unwrap();
        let expected = format!(
            "# HELP mesh_transport_channel_datagrams_total {}\n\
             # TYPE mesh_transport_channel_datagrams_total counter\n\
             mesh_transport_channel_datagrams_total{{channel=\"lease\",direction=\"sent\"}} 3\n\
             # HELP mesh_gossip_probe_rtt_seconds {}\n\
             # TYPE mesh_gossip_probe_rtt_seconds histogram\n\
             mesh_gossip_probe_rtt_seconds_bucket{{le=\"0.0001\"}} 1\n\
             mesh_gossip_probe_rtt_seconds_bucket{{le=\"1\"}} 3\n\
             mesh_gossip_probe_rtt_seconds_bucket{{le=\"+Inf\"}} 6\n\
             mesh_gossip_probe_rtt_seconds_sum 1.5\n\
             mesh_gossip_probe_rtt_seconds_count 6\n",
            TRANSPORT_CHANNEL_DATAGRAMS.help, GOSSIP_PROBE_RTT.help
        );
        assert_eq!(text, expected);
    }

    /// A family written with another type or another number of labels than the catalogue's
    /// fails the exposition instead of exposing a series the catalogue does not describe.
    #[test]
    fn a_family_written_against_the_catalogue_fails() {
        assert!(encode(Fixed(|f| f.gauge(&TRANSPORT_CHANNEL_DATAGRAMS, 1))).is_err());
        assert!(encode(Fixed(|f| f.counter(&TRANSPORT_CHANNEL_DATAGRAMS, 1))).is_err());
        assert!(
            encode(Fixed(|f| f.counters(
                &TRANSPORT_CHANNEL_DATAGRAMS,
                [(["lease", "sent"], 1)]
            )))
            .is_ok()
        );
    }
}
