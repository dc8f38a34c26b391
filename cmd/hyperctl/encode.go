package main

import (
	"bytes"
	"encoding/json"

	"github.com/hyper2kvm/hyper2kvm/agent/manifest"
	"go.yaml.in/yaml/v3"
)

// encodeManifest renders m as indented JSON or as YAML. The YAML is made
// from the JSON so that field names and order are the model's JSON tags.
func encodeManifest(m *manifest.Manifest, asJSON bool) ([]byte, error) {
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if asJSON {
		return append(js, '\n'), nil
	}
	var n yaml.Node
	if err := yaml.Unmarshal(js, &n); err != nil {
		return nil, err
	}
	plainStyle(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// plainStyle drops the JSON flow and quoting styles, except where a string
// would otherwise read as another type ("1.0" must stay a string).
func plainStyle(n *yaml.Node) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!str" {
			probe := &yaml.Node{}
			if yaml.Unmarshal([]byte(n.Value), probe) == nil && len(probe.Content) == 1 &&
				probe.Content[0].Kind == yaml.ScalarNode && probe.Content[0].Tag == "!!str" && probe.Content[0].Value == n.Value {
				n.Style = 0
			} else {
				n.Style = yaml.DoubleQuotedStyle
			}
		} else {
			n.Style = 0
		}
	default:
		n.Style = 0
	}
	for _, c := range n.Content {
		plainStyle(c)
	}
}
