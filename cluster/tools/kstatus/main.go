// Command kstatus prints the kstatus verdict on one Kubernetes object: the status that GitOps tools (Flux,
// Argo CD, kpt, cli-utils' appliers) compute to decide whether an applied object has settled. The tests use it
// to read a Tenant's health exactly as those tools do, instead of re-implementing the rules.
//
// It reads one object, JSON or YAML, from standard input and prints one JSON line,
// {"status": "Current|InProgress|Failed|Terminating|Unknown", "message": "..."}, exiting 0. Input that is
// not exactly one object (empty, a list of documents, not a mapping, no apiVersion or kind) is reported on
// standard error with exit status 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// readObject decodes the single object on r; YAML document separators may surround it, but a second object is
// an error rather than silently ignored. Numbers stay integers (int64), as the status rules expect.
func readObject(r io.Reader) (*unstructured.Unstructured, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var found *unstructured.Unstructured
	for {
		var document json.RawMessage
		err := decoder.Decode(&document)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the object: %w", err)
		}
		if len(bytes.TrimSpace(document)) == 0 || bytes.Equal(bytes.TrimSpace(document), []byte("null")) {
			continue // an empty document, e.g. between two "---"
		}
		if found != nil {
			return nil, errors.New("more than one object on standard input; give exactly one")
		}
		found = &unstructured.Unstructured{}
		if err := found.UnmarshalJSON(document); err != nil {
			return nil, fmt.Errorf("reading the object: %w", err)
		}
	}
	if found == nil {
		return nil, errors.New("no object on standard input")
	}
	if found.GetAPIVersion() == "" || found.GetKind() == "" {
		return nil, errors.New("the object has no apiVersion or no kind")
	}
	return found, nil
}

func run(stdin io.Reader, stdout io.Writer) error {
	object, err := readObject(stdin)
	if err != nil {
		return err
	}
	result, err := status.Compute(object)
	if err != nil {
		return fmt.Errorf("computing the status of %s %q: %w", object.GetKind(), object.GetName(), err)
	}
	return json.NewEncoder(stdout).Encode(verdict{Status: result.Status.String(), Message: result.Message})
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
