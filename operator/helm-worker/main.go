// helm-worker: Helm 4 as a library in one long-running process, for the operator's `helm upgrade --install`.
//
// The operator runs one per process and talks to it in JSON lines (stdin: requests, stdout: replies). Each
// release is what `helm upgrade --install NAME CHART -n NS --values V --post-renderer P --timeout T
// --history-max H --force-conflicts --disable-openapi-validation` does, and its release Secrets are the same, so
// `helm list`, `helm history` and `helm rollback` work on it as on any release. What the CLI pays on every
// call is paid once here: Go's start-up, reading the kubeconfig, API discovery; and the post-renderer is a
// question back to the operator, which answers it in its own process.
//
//	-> {"id":"7","op":"upgrade","name":"t1","namespace":"tenant-t1","chart":"/charts/tenant","values":{..},
//	    "timeout_seconds":300,"history_max":5}
//	<- {"id":"7","type":"postrender","manifests":"..."}
//	-> {"id":"7","op":"postrendered","manifests":"..."}      or {"id":"7","op":"postrendered","error":"..."}
//	<- {"id":"7","type":"result","release":{"name":..,"version":..,"chart":{"metadata":{"version":..}},
//	    "info":{"status":..}}}                                 or {"id":"7","type":"error","stderr":"Error: ..."}
//
// An error reads as the CLI would print it ("Error: UPGRADE FAILED: ..." on the upgrade branch), with the
// warnings Helm logged during the call before it, so the operator classifies both alike. Ready is
// {"type":"ready"} once the API server answered discovery; end of input ends the worker after the releases
// under way.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/client-go/rest"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	"helm.sh/helm/v4/pkg/kubeenv"
	ri "helm.sh/helm/v4/pkg/release"
	rcommon "helm.sh/helm/v4/pkg/release/common"
	release "helm.sh/helm/v4/pkg/release/v1"
	"helm.sh/helm/v4/pkg/storage/driver"
)

// capabilitiesTTL: how long the API server's versions and groups are reused before discovery runs again (the
// CLI runs it on every call; a chart that checks .Capabilities sees a new API group within this time).
const capabilitiesTTL = time.Minute

type message struct {
	ID             string          `json:"id,omitempty"`
	Op             string          `json:"op,omitempty"`
	Type           string          `json:"type,omitempty"`
	Name           string          `json:"name,omitempty"`
	Namespace      string          `json:"namespace,omitempty"`
	Chart          string          `json:"chart,omitempty"`
	Values         json.RawMessage `json:"values,omitempty"`
	TimeoutSeconds int             `json:"timeout_seconds,omitempty"`
	HistoryMax     int             `json:"history_max,omitempty"`
	Manifests      string          `json:"manifests,omitempty"`
	Error          string          `json:"error,omitempty"`
	Stderr         string          `json:"stderr,omitempty"`
	Release        any             `json:"release,omitempty"`
}

type worker struct {
	out    *json.Encoder
	outMu  sync.Mutex
	getter genericclioptions.RESTClientGetter

	capsMu   sync.Mutex
	caps     *common.Capabilities
	capsTime time.Time

	pending sync.Map // request id -> chan message: the operator's post-render answers
	running sync.WaitGroup
}

func (w *worker) send(m message) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	if err := w.out.Encode(m); err != nil {
		fmt.Fprintln(os.Stderr, "helm-worker: writing a reply:", err)
		os.Exit(1)
	}
}

// newGetter: the CLI's client settings (pkg/cli/environment.go), but persistent: one kubeconfig loader,
// discovery client and REST mapper serve every release.
func newGetter() genericclioptions.RESTClientGetter {
	flags := genericclioptions.NewConfigFlags(true)
	flags.WrapConfigFn = func(config *rest.Config) *rest.Config {
		config.Burst = 100 // the CLI's HELM_BURST_LIMIT default
		config.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return &kubeenv.RetryingRoundTripper{Wrapped: rt}
		})
		config.UserAgent = "Helm/" + common.DefaultCapabilities.HelmVersion.Version
		return config
	}
	return flags
}

// capabilities: what Helm computes from discovery before every release, computed at most once per TTL.
func (w *worker) capabilities() (*common.Capabilities, error) {
	w.capsMu.Lock()
	defer w.capsMu.Unlock()
	if w.caps != nil && time.Since(w.capsTime) < capabilitiesTTL {
		return w.caps.Copy(), nil
	}
	dc, err := w.getter.ToDiscoveryClient()
	if err != nil {
		return nil, fmt.Errorf("could not get Kubernetes discovery client: %w", err)
	}
	dc.Invalidate()
	server, err := dc.ServerVersion()
	if err != nil {
		return nil, fmt.Errorf("could not get server version from Kubernetes: %w", err)
	}
	versions, err := action.GetVersionSet(dc)
	if err != nil {
		return nil, fmt.Errorf("could not get apiVersions from Kubernetes: %w", err)
	}
	w.caps = &common.Capabilities{
		APIVersions: versions,
		KubeVersion: common.KubeVersion{Version: server.GitVersion, Major: server.Major, Minor: server.Minor},
		HelmVersion: common.DefaultCapabilities.HelmVersion,
	}
	w.capsTime = time.Now()
	return w.caps.Copy(), nil
}

// postRenderer asks the operator to post-render a release's manifests (Helm's postrenderer.PostRenderer).
type postRenderer struct {
	w       *worker
	id      string
	timeout time.Duration
}

func (p *postRenderer) Run(rendered *bytes.Buffer) (*bytes.Buffer, error) {
	answer := make(chan message, 1)
	p.w.pending.Store(p.id, answer)
	defer p.w.pending.Delete(p.id)
	p.w.send(message{ID: p.id, Type: "postrender", Manifests: rendered.String()})
	select {
	case m := <-answer:
		if m.Error != "" {
			return nil, errors.New(m.Error)
		}
		if len(bytes.TrimSpace([]byte(m.Manifests))) == 0 {
			return nil, errors.New("post-renderer \"tenant-postrender\" produced empty output")
		}
		return bytes.NewBufferString(m.Manifests), nil
	case <-time.After(p.timeout):
		return nil, errors.New("the post-renderer did not answer in time")
	}
}

// configuration: a Configuration of its own per release (its storage and client are bound to the namespace);
// the getter's caches and the capabilities are what releases share.
func (w *worker) configuration(namespace string, logs io.Writer) (*action.Configuration, error) {
	handler := slog.NewTextHandler(logs, &slog.HandlerOptions{
		Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(handler))
	if err := cfg.Init(w.getter, namespace, "secret"); err != nil {
		return nil, err
	}
	client, ok := cfg.KubeClient.(*kube.Client)
	if !ok {
		return nil, fmt.Errorf("unexpected Kubernetes client %T", cfg.KubeClient)
	}
	client.Namespace = namespace
	client.SetLogger(handler)
	caps, err := w.capabilities()
	if err != nil {
		return nil, err
	}
	cfg.Capabilities = caps
	return cfg, nil
}

// upgrade: `helm upgrade --install` (pkg/cmd/upgrade.go): install when the release has no revision or its
// last one is uninstalled, else upgrade.
func (w *worker) upgrade(req message) {
	defer w.running.Done()
	var logs bytes.Buffer
	fail := func(prefix string, err error) {
		w.send(message{ID: req.ID, Type: "error", Stderr: logs.String() + "Error: " + prefix + err.Error() + "\n"})
	}
	cfg, err := w.configuration(req.Namespace, &logs)
	if err != nil {
		fail("", err)
		return
	}
	chart, err := loader.Load(req.Chart)
	if err != nil {
		fail("", err)
		return
	}
	values, err := loader.LoadValues(bytes.NewReader(req.Values))
	if err != nil {
		fail("", err)
		return
	}
	timeout := time.Duration(req.TimeoutSeconds) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	renderer := &postRenderer{w: w, id: req.ID, timeout: timeout}
	wait := []kube.WaitOption{kube.WithStatusComputeWorkers(8)}

	history := action.NewHistory(cfg)
	history.Max = 1
	revisions, err := history.Run(req.Name)
	uninstalled := lastUninstalled(revisions)
	if errors.Is(err, driver.ErrReleaseNotFound) || uninstalled {
		install := action.NewInstall(cfg)
		install.ReleaseName = req.Name
		install.Namespace = req.Namespace
		install.Timeout = timeout
		install.WaitStrategy = kube.HookOnlyStrategy
		install.WaitOptions = wait
		install.PostRenderer = renderer
		install.DisableOpenAPIValidation = true
		install.ForceConflicts = true
		install.ServerSideApply = true
		install.Replace = uninstalled
		rel, err := install.RunWithContext(ctx, chart, values)
		if err != nil {
			fail("", err) // upgrade --install's install branch prints no prefix
			return
		}
		w.reply(req.ID, rel)
		return
	}
	if err != nil {
		fail("", err)
		return
	}
	up := action.NewUpgrade(cfg)
	up.Install = true
	up.Namespace = req.Namespace
	up.Timeout = timeout
	up.WaitStrategy = kube.HookOnlyStrategy
	up.WaitOptions = wait
	up.PostRenderer = renderer
	up.DisableOpenAPIValidation = true
	up.ForceConflicts = true
	up.MaxHistory = req.HistoryMax
	rel, err := up.RunWithContext(ctx, req.Name, chart, values)
	if err != nil {
		fail("UPGRADE FAILED: ", err)
		return
	}
	w.reply(req.ID, rel)
}

// lastUninstalled: whether the last revision Helm's storage lists is uninstalled (as the CLI decides it).
func lastUninstalled(revisions []ri.Releaser) bool {
	if len(revisions) == 0 {
		return false
	}
	rel, ok := revisions[len(revisions)-1].(*release.Release)
	return ok && rel.Info != nil && rel.Info.Status == rcommon.StatusUninstalled
}

// reply: the fields of `--output json` the operator reads (not the manifest, which holds Secrets).
func (w *worker) reply(id string, r ri.Releaser) {
	rel, ok := r.(*release.Release)
	if !ok || rel == nil || rel.Info == nil {
		w.send(message{ID: id, Type: "error", Stderr: fmt.Sprintf("Error: unexpected release %T\n", r)})
		return
	}
	chartVersion := ""
	if rel.Chart != nil && rel.Chart.Metadata != nil {
		chartVersion = rel.Chart.Metadata.Version
	}
	w.send(message{ID: id, Type: "result", Release: map[string]any{
		"name":    rel.Name,
		"version": rel.Version,
		"chart":   map[string]any{"metadata": map[string]any{"version": chartVersion}},
		"info":    map[string]any{"status": string(rel.Info.Status)},
	}})
}

func main() {
	kube.ManagedFieldsManager = "helm" // as the CLI: what the cluster records as the fields' manager
	// The protocol owns standard output; anything a library prints goes to standard error.
	protocol := os.Stdout
	os.Stdout = os.Stderr
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))

	w := &worker{out: json.NewEncoder(protocol), getter: newGetter()}
	if _, err := w.capabilities(); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		os.Exit(1)
	}
	w.send(message{Type: "ready"})

	input := json.NewDecoder(os.Stdin)
	for {
		var m message
		if err := input.Decode(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintln(os.Stderr, "helm-worker: reading a request:", err)
			}
			break
		}
		switch m.Op {
		case "upgrade":
			w.running.Add(1)
			go w.upgrade(m)
		case "postrendered":
			if answer, ok := w.pending.Load(m.ID); ok {
				answer.(chan message) <- m
			}
		default:
			fmt.Fprintf(os.Stderr, "helm-worker: unknown op %q\n", m.Op)
		}
	}
	w.running.Wait()
}
