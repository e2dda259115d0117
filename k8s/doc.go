// Package k8s holds the Kubernetes manifests of wxpay-events (kustomize
// base, overlays and Helm values) and the test that validates them without a
// cluster. It is its own Go module so that the Kubernetes libraries the test
// needs stay out of the service's module.
package k8s
