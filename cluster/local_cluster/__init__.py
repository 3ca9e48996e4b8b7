"""The local Kubernetes control plane the tests and the demo run on."""
