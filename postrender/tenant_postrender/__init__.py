"""Helm post-renderer for NeuralLog tenants: injects the tenant's NetworkPolicies, validates every manifest.

Used as `helm install ... --post-renderer tenant-postrender` (Helm 3 runs the console script, Helm 4 the
plugin in postrender/plugin.yaml), and by the operator through `render`.
"""

from tenant_postrender.render import render
from tenant_postrender.violations import ValidationFailed, Violation

__all__ = ["ValidationFailed", "Violation", "render"]
