"""The post-renderer: a rendered tenant release in, the release to apply out, or every reason to refuse it."""

from collections.abc import Collection

from tenant_postrender import stream
from tenant_postrender.budget import QUOTA_NAME, check_budget
from tenant_postrender.network_policy import build_policies, is_carrier, read_settings, server_port
from tenant_postrender.stream import Document, Manifest, name_of
from tenant_postrender.validate import check_object
from tenant_postrender.violations import ValidationFailed, Violation


def _tenant_violations(
    documents: list[Document], carriers: list[Document], policies: list[Manifest]
) -> list[Violation]:
    """What the release as a whole needs: one carrier, no policy clashing with an injected one, the budget."""
    violations = []
    if not carriers:
        violations.append(
            Violation(
                "input",
                "ConfigMap tenant-network-policy",
                "is missing, so the tenant's network policies cannot be built",
                "render charts/tenant, which carries networkPolicy in that ConfigMap for the post-renderer",
            )
        )
    for extra in carriers[1:]:
        violations.append(
            Violation(
                extra.subject,
                "metadata.annotations",
                "is a second network-policy carrier",
                "render one carrier ConfigMap per release",
            )
        )
    injected = {policy["metadata"]["name"] for policy in policies}
    for document in documents:
        if document.manifest.get("kind") == "NetworkPolicy" and name_of(document.manifest) in injected:
            violations.append(
                Violation(
                    document.subject,
                    "metadata.name",
                    "clashes with a policy the post-renderer injects",
                    "rename it, or express it as networkPolicy.ingressRules/egressRules",
                )
            )
    quotas = [
        document.manifest
        for document in documents
        if document.manifest.get("kind") == "ResourceQuota" and name_of(document.manifest) == QUOTA_NAME
    ]
    if not quotas:
        violations.append(
            Violation(
                "input",
                f"ResourceQuota {QUOTA_NAME}",
                "is missing, so the tenant has no budget",
                "render charts/tenant, which sets the quota from resources",
            )
        )
        return violations
    # The budget covers the release's steady state; hooks come and go (see budget.py).
    release = [
        obj for document in documents if not document.is_hook for obj in stream.objects_of(document.manifest)
    ]
    return violations + check_budget(quotas[0], release)


def render(text: str, *, allowed_registries: Collection[str] | None = None) -> str:
    """Inject the tenant's NetworkPolicies into a rendered release and check every object.

    Returns the stream to apply: untouched documents verbatim and in order, the network-policy carrier
    replaced by the policies. Raises ValidationFailed listing every violation when anything is wrong,
    including malformed or empty input. `allowed_registries` (e.g. ["docker.io/library", "ghcr.io/neurallog"])
    restricts where images may come from; None allows any registry.
    """
    documents, violations = stream.parse(text)
    if not documents and not violations:
        violations.append(
            Violation(
                "input",
                "stream",
                "holds no Kubernetes objects",
                "pipe in the output of `helm template` (Helm does this when given --post-renderer)",
            )
        )
    carriers = [document for document in documents if is_carrier(document.manifest)]
    policies: list[Manifest] = []
    if carriers:
        settings, problems = read_settings(carriers[0].manifest)
        violations += problems
        listen_port = server_port(document.manifest for document in documents)
        policies = build_policies(settings, carriers[0].manifest, listen_port)
    for document in documents:
        if not is_carrier(document.manifest):
            for obj in stream.objects_of(document.manifest):
                violations += check_object(obj, allowed_registries or ())
    # Helm 4 may post-render hooks on their own (--post-render-strategy separate): a stream of hooks only is
    # not a release and carries no tenant settings.
    if any(not document.is_hook for document in documents):
        violations += _tenant_violations(documents, carriers, policies)
    if violations:
        raise ValidationFailed(violations)
    output: list[str] = []
    for document in documents:
        # At this point there is at most one carrier: its place in the stream goes to the policies.
        if is_carrier(document.manifest):
            output += [stream.dump(policy) for policy in policies]
        else:
            output.append(document.text)
    return stream.join(output)
