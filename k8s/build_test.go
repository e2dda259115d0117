package k8s_test

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// objects is one kustomize build, decoded into typed API objects.
type objects struct {
	deployments     map[string]*appsv1.Deployment
	jobs            map[string]*batchv1.Job
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	serviceAccounts map[string]*corev1.ServiceAccount
	namespaces      map[string]*corev1.Namespace
	pdbs            []*policyv1.PodDisruptionBudget
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	netpols         []*networkingv1.NetworkPolicy
	ingresses       []*networkingv1.Ingress
	serviceMonitors []*monitoringv1.ServiceMonitor
	rules           []*monitoringv1.PrometheusRule
}

func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	// Strict: unknown and duplicate fields are errors, not silently dropped.
	return kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
}

func build(t *testing.T, dir string) *objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	dec := strictDecoder(t)
	o := &objects{
		deployments: map[string]*appsv1.Deployment{}, jobs: map[string]*batchv1.Job{},
		services: map[string]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{},
		secrets: map[string]*corev1.Secret{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		namespaces: map[string]*corev1.Namespace{},
	}
	for _, r := range m.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
			continue
		}
		if ns := r.GetNamespace(); gvk.Kind != "Namespace" && ns != "wxpay-events" {
			t.Errorf("%s: %s %s in namespace %q, want wxpay-events", dir, gvk.Kind, r.GetName(), ns)
		}
		switch v := obj.(type) {
		case *appsv1.Deployment:
			o.deployments[v.Name] = v
		case *batchv1.Job:
			o.jobs[v.Name] = v
		case *corev1.Service:
			o.services[v.Name] = v
		case *corev1.ConfigMap:
			o.configMaps[v.Name] = v
		case *corev1.Secret:
			o.secrets[v.Name] = v
		case *corev1.ServiceAccount:
			o.serviceAccounts[v.Name] = v
		case *corev1.Namespace:
			o.namespaces[v.Name] = v
		case *policyv1.PodDisruptionBudget:
			o.pdbs = append(o.pdbs, v)
		case *autoscalingv2.HorizontalPodAutoscaler:
			o.hpas = append(o.hpas, v)
		case *networkingv1.NetworkPolicy:
			o.netpols = append(o.netpols, v)
		case *networkingv1.Ingress:
			o.ingresses = append(o.ingresses, v)
		case *monitoringv1.ServiceMonitor:
			o.serviceMonitors = append(o.serviceMonitors, v)
		case *monitoringv1.PrometheusRule:
			o.rules = append(o.rules, v)
		default:
			t.Errorf("%s: %s %s: kind not checked by this test; add it", dir, gvk, r.GetName())
		}
	}
	return o
}

// pod is a pod template and where it came from.
type pod struct {
	owner string
	spec  *corev1.PodSpec
	lbls  map[string]string
}

func (o *objects) pods() []pod {
	var ps []pod
	for _, d := range o.deployments {
		ps = append(ps, pod{"Deployment/" + d.Name, &d.Spec.Template.Spec, d.Spec.Template.Labels})
	}
	for _, j := range o.jobs {
		ps = append(ps, pod{"Job/" + j.Name, &j.Spec.Template.Spec, j.Spec.Template.Labels})
	}
	slices.SortFunc(ps, func(a, b pod) int { return strings.Compare(a.owner, b.owner) })
	return ps
}

func allContainers(s *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range s.InitContainers {
		cs = append(cs, &s.InitContainers[i])
	}
	for i := range s.Containers {
		cs = append(cs, &s.Containers[i])
	}
	return cs
}

func container(t *testing.T, d *appsv1.Deployment, name string) *corev1.Container {
	t.Helper()
	for _, c := range allContainers(&d.Spec.Template.Spec) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container %q", d.Name, name)
	return nil
}

func deployment(t *testing.T, o *objects, name string) *appsv1.Deployment {
	t.Helper()
	d, ok := o.deployments[name]
	if !ok {
		t.Fatalf("no Deployment %s", name)
	}
	return d
}

// env is what a container sees: envFrom ConfigMaps/Secrets in order, then env
// (which wins). Values from Secrets, or from refs that do not resolve, are "?".
func (o *objects) env(c *corev1.Container) map[string]string {
	e := map[string]string{}
	for _, f := range c.EnvFrom {
		if f.ConfigMapRef != nil {
			for k, v := range o.configMaps[f.ConfigMapRef.Name].Data {
				e[f.Prefix+k] = v
			}
		}
	}
	for _, v := range c.Env {
		switch {
		case v.ValueFrom == nil:
			e[v.Name] = v.Value
		case v.ValueFrom.ConfigMapKeyRef != nil:
			ref := v.ValueFrom.ConfigMapKeyRef
			if cm, ok := o.configMaps[ref.Name]; ok {
				e[v.Name] = cm.Data[ref.Key]
			} else {
				e[v.Name] = "?"
			}
		default:
			e[v.Name] = "?"
		}
	}
	return e
}

func portNumber(t *testing.T, c *corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Errorf("container %s has no port named %q", c.Name, p.StrVal)
	return -1
}

func selects(t *testing.T, sel *metav1.LabelSelector, lbls map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(lbls))
}

// readmeSecrets returns the Secrets k8s/README.md tells the operator to create,
// each with the keys (file names) it gets.
func readmeSecrets(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Join shell continuation lines into one command line.
	var lines []string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		lines = append(lines, cur.String())
		cur.Reset()
	}
	create := regexp.MustCompile(`kubectl\s+(?:-n\s+\S+\s+)?create\s+secret\s+(generic|tls)\s+([a-z0-9.-]+)`)
	fromFile := regexp.MustCompile(`--from-file=([^=\s]+)=`)
	out := map[string][]string{}
	for _, l := range lines {
		m := create.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		keys := out[m[2]]
		if m[1] == "tls" {
			keys = append(keys, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
		}
		for _, f := range fromFile.FindAllStringSubmatch(l, -1) {
			keys = append(keys, f[1])
		}
		out[m[2]] = keys
	}
	if len(out) == 0 {
		t.Fatal("README.md tells the user to create no Secret (kubectl create secret ...)")
	}
	return out
}
