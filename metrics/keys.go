package metrics

import "github.com/prometheus/client_golang/prometheus"

// KeyMetrics counts requests per API key, so an operator sees which client
// floods the service (see docs/API.md, "Fair share"). The key label is a
// configured key name, never a key, and only the names given to NewKeys are
// used: anything else is folded into "other", so the label set stays
// bounded by the key list.
type KeyMetrics struct {
	requests *prometheus.CounterVec
	inFlight *prometheus.GaugeVec
	names    map[string]bool
	outcomes map[string]bool
}

// NewKeys registers the per-key instruments on reg, with every series of
// every name at zero.
func NewKeys(reg prometheus.Registerer, names []string) *KeyMetrics {
	k := &KeyMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "api_key_requests_total",
			Help:      "Execution requests by API key name and outcome (ok or the API error type).",
		}, []string{"key", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace,
			Name:      "api_key_in_flight",
			Help:      "Execution requests of each API key waiting for their turn or running.",
		}, []string{"key"}),
		names:    make(map[string]bool, len(names)),
		outcomes: make(map[string]bool, len(Outcomes)),
	}
	for _, o := range Outcomes {
		k.outcomes[o] = true
	}
	for _, n := range names {
		k.names[n] = true
		k.inFlight.WithLabelValues(n)
		for _, o := range Outcomes {
			k.requests.WithLabelValues(n, o)
		}
	}
	reg.MustRegister(k.requests, k.inFlight)
	return k
}

func (k *KeyMetrics) name(n string) string {
	if k.names[n] {
		return n
	}
	return "other"
}

// ObserveKeyRequest counts one request of key with outcome.
func (k *KeyMetrics) ObserveKeyRequest(key, outcome string) {
	if !k.outcomes[outcome] {
		outcome = "internal"
	}
	k.requests.WithLabelValues(k.name(key), outcome).Inc()
}

// KeyInFlight adds delta to key's requests in flight.
func (k *KeyMetrics) KeyInFlight(key string, delta int) {
	k.inFlight.WithLabelValues(k.name(key)).Add(float64(delta))
}
