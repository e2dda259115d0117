// The manifests under base/ and overlays/ are built with the kustomize library
// and decoded strictly into the Kubernetes API types (build_test.go); these
// tests then check what the programs and the operator rely on.
package k8s_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// What the programs serve (CONTRACT.md) and how the image lays them out (../Dockerfile).
const (
	receiverName    = "wxpay-receiver"
	consumerName    = "wxpay-consumer"
	receiverAdmin   = 9090
	receiverPublic  = 8080
	consumerAdmin   = 9091
	binDir          = "/usr/local/bin/"
	defaultShutdown = 10 * time.Second // SHUTDOWN_TIMEOUT's default: in-flight work on SIGTERM
)

var programs = []string{binDir + "receiver", binDir + "consumer", binDir + "wxpayctl"}

// streamsVars are the layout settings every program reads alike (internal/config.StreamsVars).
var streamsVars = []string{"STREAM_REPLICAS", "INBOUND_MAX_BYTES", "ARCHIVE_MAX_BYTES",
	"CONSUMER_MAX_ACK_PENDING", "CONSUMER_ACK_WAIT", "CONSUMER_MAX_DELIVER"}

// The metrics the programs export; every one must be used by an alert.
var alertedMetrics = []string{
	"wxpay_receiver_requests_total",
	"wxpay_receiver_verify_failures_total",
	"wxpay_receiver_publish_seconds",
	"wxpay_receiver_request_seconds",
	"wxpay_consumer_processed_total",
	"wxpay_consumer_dlq_total",
	"wxpay_consumer_pending",
	"wxpay_consumer_dedupe_errors_total",
}

type target struct {
	dir            string
	streamReplicas string
	receivers      int32  // receiver Deployment replicas
	redis          string // "url", "sentinel" or "" (base: set by overlays)
	monitoring     bool   // ServiceMonitor and PrometheusRule present
}

var targets = []target{
	{dir: "base", streamReplicas: "1", receivers: 2, monitoring: true},
	{dir: "overlays/dev", streamReplicas: "1", receivers: 1, redis: "url"},
	{dir: "overlays/prod", streamReplicas: "3", receivers: 2, redis: "sentinel", monitoring: true},
}

func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	bad := []byte(`apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replicas: 1
  replica: 2
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec: {containers: [{name: c, image: i}]}
`)
	if _, _, err := strictDecoder(t).Decode(bad, nil, nil); err == nil {
		t.Fatal("strict decoder accepted the unknown field spec.replica")
	}
	badRule := []byte(`apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: x}
spec:
  groups: [{name: g, rules: [{alert: A, expr: up, severity: x}]}]
`)
	if _, _, err := strictDecoder(t).Decode(badRule, nil, nil); err == nil {
		t.Fatal("strict decoder accepted the unknown PrometheusRule field rules[].severity")
	}
}

func TestManifests(t *testing.T) {
	documented := readmeSecrets(t)
	for _, tg := range targets {
		t.Run(strings.ReplaceAll(tg.dir, "/", "_"), func(t *testing.T) {
			o := build(t, tg.dir)
			checkPods(t, o)
			checkReferences(t, o, documented)
			checkFilePaths(t, o, documented)
			checkPDBsAndHPAs(t, o)
			checkServicesAndIngress(t, o)
			checkReceiver(t, o, tg)
			checkConsumer(t, o, tg)
			checkNetworkPolicies(t, o)
			checkMonitoring(t, o, tg)
		})
	}
}

// checkPods: every container non-root, read-only, no escalation, no
// capabilities, seccomp, resource requests and limits, no API token.
func checkPods(t *testing.T, o *objects) {
	for _, p := range o.pods() {
		ps := p.spec.SecurityContext
		if ps == nil {
			ps = &corev1.PodSecurityContext{}
		}
		if tok := p.spec.AutomountServiceAccountToken; tok == nil || *tok {
			sa, ok := o.serviceAccounts[p.spec.ServiceAccountName]
			if !ok || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("%s: mounts a service account token", p.owner)
			}
		}
		if n := p.spec.ServiceAccountName; n != "" && n != "default" {
			sa, ok := o.serviceAccounts[n]
			if !ok {
				t.Errorf("%s: ServiceAccount %s does not exist", p.owner, n)
			} else if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
				t.Errorf("ServiceAccount %s: automountServiceAccountToken is not false", n)
			}
		}
		for _, c := range allContainers(p.spec) {
			where := p.owner + " container " + c.Name
			sc := c.SecurityContext
			if sc == nil {
				t.Errorf("%s: no securityContext", where)
				continue
			}
			nonRoot := sc.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = ps.RunAsNonRoot
			}
			if nonRoot == nil || !*nonRoot {
				t.Errorf("%s: runAsNonRoot is not true", where)
			}
			uid := sc.RunAsUser
			if uid == nil {
				uid = ps.RunAsUser
			}
			if uid != nil && *uid == 0 {
				t.Errorf("%s: runs as uid 0", where)
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: root filesystem is writable", where)
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation is not false", where)
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Errorf("%s: privileged", where)
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", where)
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = ps.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: seccompProfile is not RuntimeDefault", where)
			}
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				lim, okL := c.Resources.Limits[r]
				req, okR := c.Resources.Requests[r]
				if !okL || !okR {
					t.Errorf("%s: %s request and limit required", where, r)
				} else if req.Cmp(lim) > 0 {
					t.Errorf("%s: %s request %s above limit %s", where, r, req.String(), lim.String())
				}
			}
			if strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
				t.Errorf("%s: image %q is not pinned to a tag or digest", where, c.Image)
			}
			for _, v := range c.VolumeMounts {
				if !v.ReadOnly && !isEmptyDirOrPVC(p.spec, v.Name) {
					t.Errorf("%s: volume %s must be mounted readOnly", where, v.Name)
				}
			}
		}
	}
}

func isEmptyDirOrPVC(s *corev1.PodSpec, name string) bool {
	for _, v := range s.Volumes {
		if v.Name == name {
			return v.EmptyDir != nil || v.PersistentVolumeClaim != nil
		}
	}
	return false
}

type secretRef struct {
	name     string
	optional bool
}

// secretRefs lists the Secrets a pod spec uses, and configMapRefs its ConfigMaps.
func secretRefs(s *corev1.PodSpec) (secrets []secretRef, configMaps []string) {
	opt := func(b *bool) bool { return b != nil && *b }
	for _, v := range s.Volumes {
		if v.Secret != nil {
			secrets = append(secrets, secretRef{v.Secret.SecretName, opt(v.Secret.Optional)})
		}
		if v.ConfigMap != nil {
			configMaps = append(configMaps, v.ConfigMap.Name)
		}
		if v.Projected != nil {
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					secrets = append(secrets, secretRef{src.Secret.Name, opt(src.Secret.Optional)})
				}
				if src.ConfigMap != nil {
					configMaps = append(configMaps, src.ConfigMap.Name)
				}
			}
		}
	}
	for _, ps := range s.ImagePullSecrets {
		secrets = append(secrets, secretRef{name: ps.Name})
	}
	for _, c := range allContainers(s) {
		for _, f := range c.EnvFrom {
			if f.SecretRef != nil {
				secrets = append(secrets, secretRef{f.SecretRef.Name, opt(f.SecretRef.Optional)})
			}
			if f.ConfigMapRef != nil {
				configMaps = append(configMaps, f.ConfigMapRef.Name)
			}
		}
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				secrets = append(secrets, secretRef{r.Name, opt(r.Optional)})
			}
			if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
				configMaps = append(configMaps, r.Name)
			}
		}
	}
	return secrets, configMaps
}

// checkReferences: every ConfigMap referenced is built; every Secret referenced
// is built or is one the README tells the user to create, and the README
// documents no Secret that nothing uses.
func checkReferences(t *testing.T, o *objects, documented map[string][]string) {
	used := map[string]bool{}
	for _, p := range o.pods() {
		secrets, cms := secretRefs(p.spec)
		for _, cm := range cms {
			if _, ok := o.configMaps[cm]; !ok {
				t.Errorf("%s: ConfigMap %s is neither built nor documented", p.owner, cm)
			}
		}
		for _, s := range secrets {
			used[s.name] = true
			_, built := o.secrets[s.name]
			if _, doc := documented[s.name]; !built && !doc {
				t.Errorf("%s: Secret %s is neither built nor created in README.md", p.owner, s.name)
			}
		}
	}
	for _, ing := range o.ingresses {
		for _, tls := range ing.Spec.TLS {
			used[tls.SecretName] = true
			_, built := o.secrets[tls.SecretName]
			if _, doc := documented[tls.SecretName]; !built && !doc {
				t.Errorf("Ingress %s: TLS Secret %s is neither built nor created in README.md", ing.Name, tls.SecretName)
			}
		}
	}
	for name := range documented {
		if !used[name] {
			t.Errorf("README.md creates Secret %s, which no object in this build uses", name)
		}
	}
}

// checkFilePaths: every *_FILE(S) variable names a file inside a read-only
// mount, and for Secret volumes a key that the README's command creates (or
// an explicit item), so the env, the volumes and the docs agree.
func checkFilePaths(t *testing.T, o *objects, documented map[string][]string) {
	for _, p := range o.pods() {
		for _, c := range allContainers(p.spec) {
			env := o.env(c)
			for name, val := range env {
				if !strings.HasSuffix(name, "_FILE") && !strings.HasSuffix(name, "_FILES") && name != "NATS_CREDS" {
					continue
				}
				for _, file := range strings.Split(val, ",") {
					file = strings.TrimSpace(file)
					if file == "" {
						continue
					}
					where := fmt.Sprintf("%s container %s: %s=%s", p.owner, c.Name, name, file)
					var mount *corev1.VolumeMount
					for i, m := range c.VolumeMounts {
						if strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") &&
							(mount == nil || len(m.MountPath) > len(mount.MountPath)) {
							mount = &c.VolumeMounts[i]
						}
					}
					if mount == nil {
						t.Errorf("%s: no volume is mounted there", where)
						continue
					}
					if !mount.ReadOnly {
						t.Errorf("%s: mount %s is not readOnly", where, mount.MountPath)
					}
					rel := strings.TrimPrefix(file, strings.TrimSuffix(mount.MountPath, "/")+"/")
					if !volumeProvides(o, p.spec, mount.Name, rel, documented) {
						t.Errorf("%s: volume %s provides no file %q", where, mount.Name, rel)
					}
				}
			}
		}
	}
}

func volumeProvides(o *objects, s *corev1.PodSpec, volume, rel string, documented map[string][]string) bool {
	provides := func(secret string, items []corev1.KeyToPath) bool {
		if len(items) > 0 {
			return slices.ContainsFunc(items, func(i corev1.KeyToPath) bool { return i.Path == rel })
		}
		if sec, ok := o.secrets[secret]; ok {
			_, a := sec.Data[rel]
			_, b := sec.StringData[rel]
			return a || b
		}
		return slices.Contains(documented[secret], rel)
	}
	for _, v := range s.Volumes {
		if v.Name != volume {
			continue
		}
		switch {
		case v.Secret != nil:
			return provides(v.Secret.SecretName, v.Secret.Items)
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil && provides(src.Secret.Name, src.Secret.Items) {
					return true
				}
			}
			return false
		case v.ConfigMap != nil:
			if len(v.ConfigMap.Items) > 0 {
				return slices.ContainsFunc(v.ConfigMap.Items, func(i corev1.KeyToPath) bool { return i.Path == rel })
			}
			_, ok := o.configMaps[v.ConfigMap.Name].Data[rel]
			return ok
		}
		return true // other volume kinds: contents unknown here
	}
	return false
}

func checkPDBsAndHPAs(t *testing.T, o *objects) {
	for _, name := range []string{receiverName, consumerName} {
		d := deployment(t, o, name)
		var pdbs, hpas int
		for _, p := range o.pdbs {
			if selects(t, p.Spec.Selector, d.Spec.Template.Labels) {
				pdbs++
			}
		}
		for _, h := range o.hpas {
			if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == name {
				hpas++
			}
		}
		if pdbs != 1 || hpas != 1 {
			t.Errorf("Deployment %s: %d PodDisruptionBudgets and %d HPAs, want 1 and 1", name, pdbs, hpas)
		}
	}
	for _, p := range o.pdbs {
		n := 0
		for _, d := range o.deployments {
			if selects(t, p.Spec.Selector, d.Spec.Template.Labels) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("PodDisruptionBudget %s selects the pods of %d Deployments, want 1", p.Name, n)
		}
		if p.Spec.MinAvailable != nil {
			t.Errorf("PodDisruptionBudget %s: use maxUnavailable, so a 1-replica overlay can still be drained", p.Name)
		}
	}
	for _, h := range o.hpas {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || o.deployments[ref.Name] == nil {
			t.Errorf("HPA %s targets %s %s %s, which is not a Deployment in this build", h.Name, ref.APIVersion, ref.Kind, ref.Name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("HPA %s: minReplicas must be set and <= maxReplicas", h.Name)
		}
		if !slices.ContainsFunc(h.Spec.Metrics, func(m autoscalingv2.MetricSpec) bool {
			return m.Type == autoscalingv2.ResourceMetricSourceType && m.Resource != nil && m.Resource.Name == corev1.ResourceCPU
		}) {
			t.Errorf("HPA %s does not scale on CPU", h.Name)
		}
	}
}

// servicePods returns the Deployment whose pods the Service selects.
func servicePods(t *testing.T, o *objects, svc *corev1.Service) *appsv1.Deployment {
	t.Helper()
	var found *appsv1.Deployment
	for _, d := range o.deployments {
		if selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels) {
			if found != nil {
				t.Errorf("Service %s selects the pods of two Deployments", svc.Name)
			}
			found = d
		}
	}
	if found == nil {
		t.Errorf("Service %s selects no Deployment's pods", svc.Name)
	}
	return found
}

// targetPort resolves a Service port to the container port number it reaches.
func targetPort(t *testing.T, d *appsv1.Deployment, sp corev1.ServicePort) int32 {
	t.Helper()
	tp := sp.TargetPort
	if tp.Type == intstr.Int && tp.IntVal == 0 {
		return sp.Port
	}
	if tp.Type == intstr.Int {
		return tp.IntVal
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == tp.StrVal {
				return cp.ContainerPort
			}
		}
	}
	t.Errorf("Service port %s: no container port named %q in %s", sp.Name, tp.StrVal, d.Name)
	return -1
}

func checkServicesAndIngress(t *testing.T, o *objects) {
	for _, svc := range o.services {
		if d := servicePods(t, o, svc); d != nil {
			for _, sp := range svc.Spec.Ports {
				targetPort(t, d, sp)
			}
		}
	}
	svc, ok := o.services[receiverName]
	if !ok {
		t.Fatalf("no Service %s", receiverName)
	}
	d := deployment(t, o, receiverName)
	ports := map[string]corev1.ServicePort{}
	for _, sp := range svc.Spec.Ports {
		ports[sp.Name] = sp
	}
	if sp, ok := ports["http"]; !ok || sp.Port != 80 || targetPort(t, d, sp) != receiverPublic {
		t.Errorf("Service %s: want port http 80 -> %d, have %+v", receiverName, receiverPublic, ports["http"])
	}
	if sp, ok := ports["metrics"]; !ok || targetPort(t, d, sp) != receiverAdmin {
		t.Errorf("Service %s: want a separate port metrics -> %d", receiverName, receiverAdmin)
	}
	if len(o.ingresses) == 0 {
		t.Error("no Ingress for the notify path")
	}
	for _, ing := range o.ingresses {
		for _, rule := range ing.Spec.Rules {
			if rule.HTTP == nil {
				continue
			}
			for _, p := range rule.HTTP.Paths {
				b := p.Backend.Service
				if p.Path != "/notify" || p.PathType == nil || *p.PathType != networkingv1.PathTypePrefix {
					t.Errorf("Ingress %s exposes path %q: only Prefix /notify may be public", ing.Name, p.Path)
				}
				if b == nil || b.Name != receiverName {
					t.Errorf("Ingress %s path %s: backend is not Service %s", ing.Name, p.Path, receiverName)
					continue
				}
				sp, ok := ports[b.Port.Name]
				if b.Port.Name == "" {
					for _, q := range svc.Spec.Ports {
						if q.Port == b.Port.Number {
							sp, ok = q, true
						}
					}
				}
				if !ok || targetPort(t, d, sp) != receiverPublic {
					t.Errorf("Ingress %s path %s: backend port %+v does not reach the public port %d", ing.Name, p.Path, b.Port, receiverPublic)
				}
			}
		}
		if ing.Spec.DefaultBackend != nil {
			t.Errorf("Ingress %s has a default backend: only /notify may be public", ing.Name)
		}
	}
}

// checkProbes: readiness /readyz and liveness /healthz on the admin port, which
// is the port ADMIN_ADDR tells the program to serve.
func checkProbes(t *testing.T, o *objects, c *corev1.Container, admin int32) {
	t.Helper()
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("container %s: no HTTP %s probe", c.Name, pr.kind)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("container %s: %s probe on %s, want %s", c.Name, pr.kind, pr.probe.HTTPGet.Path, pr.path)
		}
		if p := portNumber(t, c, pr.probe.HTTPGet.Port); p != admin {
			t.Errorf("container %s: %s probe on port %d, want %d", c.Name, pr.kind, p, admin)
		}
	}
	if got, want := o.env(c)["ADMIN_ADDR"], ":"+strconv.Itoa(int(admin)); got != want && got != "" {
		t.Errorf("container %s: ADMIN_ADDR=%q but the probes use port %d", c.Name, got, admin)
	}
}

func command(c *corev1.Container) string { return strings.Join(slices.Concat(c.Command, c.Args), " ") }

func ptrValue[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func checkReceiver(t *testing.T, o *objects, tg target) {
	d := deployment(t, o, receiverName)
	c := container(t, d, "receiver")
	if command(c) != binDir+"receiver" {
		t.Errorf("receiver runs %q", command(c))
	}
	checkProbes(t, o, c, receiverAdmin)
	env := o.env(c)
	if v := env["RECEIVER_ADDR"]; v != "" && v != ":"+strconv.Itoa(receiverPublic) {
		t.Errorf("receiver: RECEIVER_ADDR=%q, want :%d", v, receiverPublic)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != tg.receivers {
		t.Errorf("receiver replicas = %d, want %d", ptrValue(d.Spec.Replicas), tg.receivers)
	}
	for _, h := range o.hpas {
		if h.Spec.ScaleTargetRef.Name == receiverName && *h.Spec.MinReplicas < tg.receivers {
			t.Errorf("receiver HPA minReplicas %d below %d", *h.Spec.MinReplicas, tg.receivers)
		}
	}
	s := &d.Spec.Template.Spec
	if len(s.TopologySpreadConstraints) == 0 {
		t.Error("receiver: no topologySpreadConstraints")
	}
	// Graceful shutdown: preStop sleep while endpoints are removed, then the
	// receiver's own in-flight timeout and the NATS drain must fit the grace period.
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil || c.Lifecycle.PreStop.Sleep.Seconds < 5 {
		t.Error("receiver: want a preStop sleep of at least 5 s (no shell in the image)")
	} else {
		checkGrace(t, o, d, c, c.Lifecycle.PreStop.Sleep.Seconds)
	}
	// The receiver cannot decrypt and does not dedupe: no APIv3 key, no Redis.
	for _, c := range allContainers(s) {
		for k := range o.env(c) {
			if k == "WECHATPAY_APIV3_KEY_FILE" || strings.HasPrefix(k, "REDIS_") {
				t.Errorf("receiver container %s has %s", c.Name, k)
			}
		}
	}
	apiv3 := apiv3Secrets(t, o)
	secrets, _ := secretRefs(s)
	for _, sr := range secrets {
		if apiv3[sr.name] {
			t.Errorf("receiver mounts Secret %s, which holds the APIv3 key", sr.name)
		}
	}
	if env["WECHATPAY_PUBLIC_KEY_FILE"] == "" && env["WECHATPAY_PLATFORM_CERT_FILES"] == "" && env["WECHATPAY_ACCOUNTS_FILE"] == "" {
		t.Error("receiver has no verification key configured")
	}
}

// checkGrace: the grace period covers the preStop sleep, the program's
// SHUTDOWN_TIMEOUT and at least 5 s for draining NATS.
func checkGrace(t *testing.T, o *objects, d *appsv1.Deployment, c *corev1.Container, preStop int64) {
	t.Helper()
	shutdown := defaultShutdown
	if v := o.env(c)["SHUTDOWN_TIMEOUT"]; v != "" {
		var err error
		if shutdown, err = time.ParseDuration(v); err != nil {
			t.Errorf("%s: SHUTDOWN_TIMEOUT=%q: %v", d.Name, v, err)
		}
	}
	need := preStop + int64(shutdown.Seconds()) + 5
	if g := ptrValue(d.Spec.Template.Spec.TerminationGracePeriodSeconds); g < need {
		t.Errorf("%s: terminationGracePeriodSeconds %d, want >= %d (preStop %d s + SHUTDOWN_TIMEOUT %s + 5 s drain)",
			d.Name, g, need, preStop, shutdown)
	}
}

// apiv3Secrets finds the Secrets behind the consumer's WECHATPAY_APIV3_KEY_FILE.
func apiv3Secrets(t *testing.T, o *objects) map[string]bool {
	t.Helper()
	d := deployment(t, o, consumerName)
	c := container(t, d, "consumer")
	file := o.env(c)["WECHATPAY_APIV3_KEY_FILE"]
	if file == "" {
		t.Fatal("consumer has no WECHATPAY_APIV3_KEY_FILE")
	}
	out := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if !strings.HasPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/") {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name {
				continue
			}
			if v.Secret != nil {
				out[v.Secret.SecretName] = true
			}
			if v.Projected != nil {
				for _, src := range v.Projected.Sources {
					if src.Secret != nil {
						out[src.Secret.Name] = true
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("consumer: WECHATPAY_APIV3_KEY_FILE=%s is not in a Secret volume", file)
	}
	return out
}

func checkConsumer(t *testing.T, o *objects, tg target) {
	d := deployment(t, o, consumerName)
	c := container(t, d, "consumer")
	if command(c) != binDir+"consumer" {
		t.Errorf("consumer runs %q", command(c))
	}
	checkProbes(t, o, c, consumerAdmin)
	checkGrace(t, o, d, c, 0)
	if len(d.Spec.Template.Spec.TopologySpreadConstraints) == 0 {
		t.Error("consumer: no topologySpreadConstraints")
	}
	for _, p := range c.Ports {
		if p.ContainerPort != consumerAdmin {
			t.Errorf("consumer exposes port %d: it has no public port", p.ContainerPort)
		}
	}
	if svc, ok := o.services[consumerName]; ok {
		for _, sp := range svc.Spec.Ports {
			if targetPort(t, d, sp) != consumerAdmin {
				t.Errorf("Service %s port %s does not reach the admin port", svc.Name, sp.Name)
			}
		}
	} else {
		t.Errorf("no Service %s for its metrics", consumerName)
	}

	// The streams-apply step: an init container of the consumer (or a Job).
	var apply []*corev1.Container
	for i := range d.Spec.Template.Spec.InitContainers {
		if ic := &d.Spec.Template.Spec.InitContainers[i]; command(ic) == binDir+"wxpayctl streams apply" {
			apply = append(apply, ic)
		}
	}
	for _, j := range o.jobs {
		for i := range j.Spec.Template.Spec.Containers {
			if jc := &j.Spec.Template.Spec.Containers[i]; command(jc) == binDir+"wxpayctl streams apply" {
				apply = append(apply, jc)
			}
		}
	}
	if len(apply) != 1 {
		t.Fatalf("want exactly one `wxpayctl streams apply` step, found %d", len(apply))
	}
	a := apply[0]
	if a.Image != c.Image {
		t.Errorf("streams apply runs image %s, the consumer %s: they must be the same version", a.Image, c.Image)
	}
	for _, cc := range []*corev1.Container{a, c} {
		env := o.env(cc)
		if got := env["STREAM_REPLICAS"]; got != tg.streamReplicas {
			t.Errorf("container %s: STREAM_REPLICAS=%q, want %q", cc.Name, got, tg.streamReplicas)
		}
		if env["NATS_URL"] == "" {
			t.Errorf("container %s: no NATS_URL", cc.Name)
		}
	}
	for k := range o.env(a) {
		if strings.HasPrefix(k, "WECHATPAY_") || strings.HasPrefix(k, "REDIS_") {
			t.Errorf("streams apply gets %s: it needs NATS only", k)
		}
	}
	// One owner of the layout: streams apply, the consumer and the receiver (which creates what is
	// missing) read the same values, from the same place.
	recv := container(t, deployment(t, o, receiverName), "receiver")
	for _, v := range streamsVars {
		want := o.env(a)[v]
		for _, cc := range []*corev1.Container{c, recv} {
			if got := o.env(cc)[v]; got != want {
				t.Errorf("%s=%q in container %s but %q in streams apply: one setting, one value", v, got, cc.Name, want)
			}
		}
	}
	// The fleet's limit of messages in flight holds every worker of the largest fleet the HPA makes.
	workers := 8 // CONSUMER_WORKERS' default
	if w := o.env(c)["CONSUMER_WORKERS"]; w != "" {
		workers, _ = strconv.Atoi(w)
	}
	maxAck, err := strconv.Atoi(o.env(a)["CONSUMER_MAX_ACK_PENDING"])
	if err != nil {
		t.Errorf("CONSUMER_MAX_ACK_PENDING=%q: %v", o.env(a)["CONSUMER_MAX_ACK_PENDING"], err)
	}
	// Under a backlog every worker takes up to CONSUMER_BATCH at once: the limit lets each fill its batch.
	batch := 64 // CONSUMER_BATCH's default
	if b := o.env(c)["CONSUMER_BATCH"]; b != "" {
		batch, _ = strconv.Atoi(b)
	}
	for _, h := range o.hpas {
		if h.Spec.ScaleTargetRef.Name == consumerName && int(h.Spec.MaxReplicas)*workers*batch > maxAck {
			t.Errorf("CONSUMER_MAX_ACK_PENDING=%d is below the HPA's %d replicas × %d workers × batches of %d: the fleet could not fill them",
				maxAck, h.Spec.MaxReplicas, workers, batch)
		}
	}
	env := o.env(c)
	// The consumer's account check requires a verification key per account.
	if env["WECHATPAY_PUBLIC_KEY_FILE"] == "" && env["WECHATPAY_PLATFORM_CERT_FILES"] == "" && env["WECHATPAY_ACCOUNTS_FILE"] == "" {
		t.Error("consumer has no verification key configured; its account check rejects that")
	}
	switch tg.redis {
	case "url":
		if env["REDIS_URL"] == "" || env["REDIS_ADDRS"] != "" {
			t.Errorf("consumer: want REDIS_URL only, have REDIS_URL=%q REDIS_ADDRS=%q", env["REDIS_URL"], env["REDIS_ADDRS"])
		}
	case "sentinel":
		if env["REDIS_PASSWORD"] == "" || env["REDIS_SENTINEL_PASSWORD"] == "" {
			t.Error("consumer: Sentinel without REDIS_PASSWORD and REDIS_SENTINEL_PASSWORD (helm/redis-values.yaml turns auth on)")
		}
		if env["REDIS_ADDRS"] == "" || env["REDIS_MASTER_NAME"] == "" || env["REDIS_URL"] != "" {
			t.Errorf("consumer: want REDIS_ADDRS + REDIS_MASTER_NAME only, have %q %q %q",
				env["REDIS_ADDRS"], env["REDIS_MASTER_NAME"], env["REDIS_URL"])
		}
		for _, a := range strings.Split(env["REDIS_ADDRS"], ",") {
			if !strings.HasSuffix(a, ":26379") {
				t.Errorf("consumer: REDIS_ADDRS entry %q is not a Sentinel (:26379)", a)
			}
		}
	}
	// One image for the three programs; every container of ours runs one of them.
	for _, p := range o.pods() {
		for _, cc := range allContainers(p.spec) {
			if cc.Image == c.Image && (len(cc.Command) == 0 || !slices.Contains(programs, cc.Command[0])) {
				t.Errorf("%s container %s: command %q is not one of %v", p.owner, cc.Name, cc.Command, programs)
			}
		}
	}
}

// policy summarises the NetworkPolicies that select one Deployment's pods.
type policy struct {
	egressPorts  map[int32]bool
	ingressPorts map[int32][]networkingv1.NetworkPolicyPeer // nil slice: from anywhere
	egressAll    bool                                       // a rule without ports: every port allowed
	ingressAll   bool
}

func policyFor(t *testing.T, o *objects, d *appsv1.Deployment) policy {
	t.Helper()
	p := policy{egressPorts: map[int32]bool{}, ingressPorts: map[int32][]networkingv1.NetworkPolicyPeer{}}
	var n int
	for _, np := range o.netpols {
		if !selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
			continue
		}
		n++
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) ||
			!slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			t.Errorf("NetworkPolicy %s must restrict both Ingress and Egress", np.Name)
		}
		for _, r := range np.Spec.Egress {
			if len(r.Ports) == 0 {
				p.egressAll = true
			}
			for _, port := range r.Ports {
				if port.Port == nil || port.Port.Type != intstr.Int || port.EndPort != nil {
					t.Errorf("NetworkPolicy %s: egress ports must be single numbers", np.Name)
					continue
				}
				p.egressPorts[port.Port.IntVal] = true
			}
		}
		for _, r := range np.Spec.Ingress {
			if len(r.Ports) == 0 {
				p.ingressAll = true
			}
			for _, port := range r.Ports {
				if port.Port == nil || port.Port.Type != intstr.Int {
					t.Errorf("NetworkPolicy %s: ingress ports must be numbers", np.Name)
					continue
				}
				if len(r.From) == 0 {
					p.ingressPorts[port.Port.IntVal] = nil
				} else if prev, seen := p.ingressPorts[port.Port.IntVal]; !seen || prev != nil {
					p.ingressPorts[port.Port.IntVal] = append(prev, r.From...)
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("no NetworkPolicy selects Deployment %s", d.Name)
	}
	return p
}

func fromMonitoringOnly(peers []networkingv1.NetworkPolicyPeer) bool {
	if len(peers) == 0 {
		return false
	}
	for _, peer := range peers {
		if peer.IPBlock != nil || peer.NamespaceSelector == nil ||
			peer.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" {
			return false
		}
	}
	return true
}

func checkNetworkPolicies(t *testing.T, o *objects) {
	for _, np := range o.netpols {
		n := 0
		for _, d := range o.deployments {
			if selects(t, &np.Spec.PodSelector, d.Spec.Template.Labels) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("NetworkPolicy %s selects no Deployment's pods", np.Name)
		}
	}

	r := policyFor(t, o, deployment(t, o, receiverName))
	if r.egressAll || r.ingressAll {
		t.Error("receiver NetworkPolicy has a rule that allows every port")
	}
	for _, port := range []int32{6379, 26379} {
		if r.egressPorts[port] {
			t.Errorf("receiver may reach Redis port %d; it must not use Redis", port)
		}
	}
	for port := range r.egressPorts {
		if port != 4222 && port != 53 {
			t.Errorf("receiver may reach port %d; want NATS (4222) and DNS (53) only", port)
		}
	}
	for _, port := range []int32{4222, 53} {
		if !r.egressPorts[port] {
			t.Errorf("receiver may not reach port %d", port)
		}
	}
	if peers, ok := r.ingressPorts[receiverPublic]; !ok || peers != nil {
		t.Errorf("receiver port %d must be open to any source", receiverPublic)
	}
	if peers, ok := r.ingressPorts[receiverAdmin]; !ok || !fromMonitoringOnly(peers) {
		t.Errorf("receiver admin port %d must be open to the monitoring namespace only", receiverAdmin)
	}
	for port := range r.ingressPorts {
		if port != receiverPublic && port != receiverAdmin {
			t.Errorf("receiver NetworkPolicy admits port %d", port)
		}
	}

	c := policyFor(t, o, deployment(t, o, consumerName))
	if c.egressAll || c.ingressAll {
		t.Error("consumer NetworkPolicy has a rule that allows every port")
	}
	for _, port := range []int32{4222, 6379, 26379, 53} {
		if !c.egressPorts[port] {
			t.Errorf("consumer may not reach port %d", port)
		}
	}
	for port, peers := range c.ingressPorts {
		if port != consumerAdmin || !fromMonitoringOnly(peers) {
			t.Errorf("consumer admits port %d from %v; want %d from the monitoring namespace only", port, peers, consumerAdmin)
		}
	}
}

func checkMonitoring(t *testing.T, o *objects, tg target) {
	if !tg.monitoring {
		if len(o.serviceMonitors)+len(o.rules) != 0 {
			t.Error("unexpected ServiceMonitor/PrometheusRule in this build")
		}
		return
	}
	if len(o.serviceMonitors) == 0 || len(o.rules) == 0 {
		t.Fatal("want a ServiceMonitor and a PrometheusRule")
	}
	scraped := map[string]bool{}
	for _, sm := range o.serviceMonitors {
		sel := sm.Spec.Selector
		for _, svc := range o.services {
			if !selects(t, &sel, svc.Labels) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, svc.Name, ep.Port)
				}
				if ep.Path != "" && ep.Path != "/metrics" {
					t.Errorf("ServiceMonitor %s scrapes %s, want /metrics", sm.Name, ep.Path)
				}
			}
			scraped[svc.Name] = true
		}
	}
	for _, name := range []string{receiverName, consumerName} {
		if !scraped[name] {
			t.Errorf("no ServiceMonitor scrapes Service %s", name)
		}
	}
	dashboards := 0
	for name, cm := range o.configMaps {
		if cm.Labels["grafana_dashboard"] != "1" {
			continue
		}
		for key, body := range cm.Data {
			var d struct {
				UID    string            `json:"uid"`
				Panels []json.RawMessage `json:"panels"`
			}
			if err := json.Unmarshal([]byte(body), &d); err != nil || d.UID == "" || len(d.Panels) == 0 {
				t.Errorf("ConfigMap %s: %s is not a Grafana dashboard with a uid and panels (%v)", name, key, err)
			}
			dashboards++
		}
	}
	if dashboards == 0 {
		t.Error("no ConfigMap labelled grafana_dashboard carries the dashboard")
	}
	var exprs []string
	for _, pr := range o.rules {
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" || r.Expr.String() == "" || r.Labels["severity"] == "" {
					t.Errorf("PrometheusRule %s: rule %q needs alert, expr and a severity label", pr.Name, r.Alert)
				}
				exprs = append(exprs, r.Expr.String())
			}
		}
	}
	all := strings.Join(exprs, "\n")
	for _, m := range alertedMetrics {
		if !strings.Contains(all, m) {
			t.Errorf("no alert uses %s", m)
		}
	}
	if !strings.Contains(all, `reason!="probe"`) {
		t.Error("the verification-failure alert must leave out WeChat's signature probes")
	}
	if !strings.Contains(all, `wxpay_consumer_dedupe_errors_total{kind="oom"}`) {
		t.Error("no alert fires when Redis is full (dedupe errors of kind oom)")
	}
}

// TestHelmValues: the values files for the production brokers parse and say
// what overlays/prod relies on.
func TestHelmValues(t *testing.T) {
	load := func(file string) map[string]any {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.UnmarshalStrict(b, &v); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return v
	}
	get := func(v map[string]any, keys string) any {
		var cur any = v
		for _, k := range strings.Split(keys, ".") {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		}
		return cur
	}
	nats := load("helm/nats-values.yaml")
	for keys, want := range map[string]any{
		"config.cluster.enabled":                 true,
		"config.cluster.replicas":                float64(3),
		"config.jetstream.enabled":               true,
		"config.jetstream.fileStore.enabled":     true,
		"config.jetstream.fileStore.pvc.enabled": true,
	} {
		if got := get(nats, keys); got != want {
			t.Errorf("nats-values.yaml %s = %v, want %v", keys, got, want)
		}
	}
	redis := load("helm/redis-values.yaml")
	for keys, want := range map[string]any{
		"architecture":                "replication",
		"sentinel.enabled":            true,
		"replica.replicaCount":        float64(3),
		"replica.persistence.enabled": true,
		"auth.enabled":                true,
		"auth.sentinel":               true,
	} {
		if got := get(redis, keys); got != want {
			t.Errorf("redis-values.yaml %s = %v, want %v", keys, got, want)
		}
	}
	// A full Redis must refuse writes, never evict dedupe keys, and hit its maxmemory before the
	// container hits its memory limit.
	conf, _ := get(redis, "commonConfiguration").(string)
	limit, err := resource.ParseQuantity(fmt.Sprint(get(redis, "replica.resources.limits.memory")))
	if err != nil {
		t.Fatalf("redis-values.yaml replica.resources.limits.memory: %v", err)
	}
	checkRedisMemory(t, "redis-values.yaml commonConfiguration", strings.Fields(conf), limit)
	if !strings.Contains(conf, "appendonly yes") {
		t.Error("redis-values.yaml commonConfiguration drops the chart's appendonly yes")
	}

	// The master set the Sentinels watch is the one the consumer asks for.
	o := build(t, "overlays/prod")
	env := o.env(container(t, deployment(t, o, consumerName), "consumer"))
	if got := get(redis, "sentinel.masterSet"); got != env["REDIS_MASTER_NAME"] {
		t.Errorf("redis-values.yaml sentinel.masterSet = %v, overlays/prod REDIS_MASTER_NAME = %q", got, env["REDIS_MASTER_NAME"])
	}
}

// TestDockerfile: the image the manifests run is laid out as they expect.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	for _, want := range []string{
		"CGO_ENABLED=0", "-trimpath", `-ldflags "-s -w"`,
		"./cmd/receiver", "./cmd/consumer", "./cmd/wxpayctl",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		binDir,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\d+)(?::(\d+))?\s*$`).FindStringSubmatch(df)
	if user == nil || user[1] == "0" {
		t.Errorf("Dockerfile: want a numeric non-root USER, have %v", user)
	}
	for _, p := range programs {
		if !strings.Contains(df, path.Base(p)) {
			t.Errorf("Dockerfile does not install %s", p)
		}
	}
	if _, err := os.Stat("../.dockerignore"); err != nil {
		t.Error(err)
	}
}

// TestDevRedis: the dev overlay's Redis is configured like production's: noeviction, and a maxmemory
// under the container's memory limit.
func TestDevRedis(t *testing.T) {
	o := build(t, "overlays/dev")
	c := container(t, deployment(t, o, "redis"), "redis")
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Fatal("dev redis: no memory limit")
	}
	var words []string
	for _, a := range c.Args {
		words = append(words, strings.TrimPrefix(a, "--"))
	}
	checkRedisMemory(t, "dev redis args", words, limit)
}

// checkRedisMemory checks Redis configuration words (redis.conf or command-line arguments without
// their dashes) for maxmemory-policy noeviction and a maxmemory below limit.
func checkRedisMemory(t *testing.T, where string, words []string, limit resource.Quantity) {
	t.Helper()
	conf := map[string]string{}
	for i := 0; i+1 < len(words); i++ {
		if k := words[i]; k == "maxmemory" || k == "maxmemory-policy" {
			conf[k] = words[i+1]
		}
	}
	if got := conf["maxmemory-policy"]; got != "noeviction" {
		t.Errorf("%s: maxmemory-policy %q, want noeviction (every dedupe key has a TTL: any other policy may evict them)", where, got)
	}
	maxBytes, err := redisBytes(conf["maxmemory"])
	if err != nil || maxBytes <= 0 {
		t.Fatalf("%s: maxmemory %q: want a size (%v)", where, conf["maxmemory"], err)
	}
	if maxBytes >= limit.Value() {
		t.Errorf("%s: maxmemory %s (%d bytes) is not below the memory limit %s", where, conf["maxmemory"], maxBytes, limit.String())
	}
}

// redisBytes parses a redis.conf memory size: 1k = 1000, 1kb = 1024, and so on for m(b) and g(b).
func redisBytes(s string) (int64, error) {
	s = strings.ToLower(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"gb", 1 << 30}, {"mb", 1 << 20}, {"kb", 1 << 10}, {"g", 1e9}, {"m", 1e6}, {"k", 1e3}, {"b", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}
