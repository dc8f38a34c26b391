package dbusapi

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// ListSources is the Manager's ListSources: the agent's sources, never a
// password.
func (c *Client) ListSources(ctx context.Context, interactive bool) ([]apitype.Source, error) {
	call, err := c.call(ctx, "list sources", ManagerPath, ManagerIface+".ListSources", interactive)
	if err != nil {
		return nil, err
	}
	var rows []sourceRow
	if err := call.Store(&rows); err != nil {
		return nil, fmt.Errorf("list sources: %w", err)
	}
	out := make([]apitype.Source, 0, len(rows))
	for _, r := range rows {
		out = append(out, apitype.Source{Name: r.Name, Type: r.Type, URL: r.URL, Username: r.Username, Datacenter: r.Datacenter, PasswordSet: r.PasswordSet, Error: r.Error})
	}
	return out, nil
}

// BrowseSource is the Manager's BrowseSource: the folders and VMs at an
// inventory path of a source.
func (c *Client) BrowseSource(ctx context.Context, name, path string, interactive bool) ([]apitype.InventoryEntry, error) {
	call, err := c.call(ctx, "browse source "+name, ManagerPath, ManagerIface+".BrowseSource", interactive, name, path)
	if err != nil {
		return nil, err
	}
	var text string
	if err := call.Store(&text); err != nil {
		return nil, fmt.Errorf("browse source %s: %w", name, err)
	}
	var out []apitype.InventoryEntry
	if err := json.Unmarshal([]byte(text), &out); err != nil {
		return nil, fmt.Errorf("browse source %s: the agent's answer is not an inventory: %w", name, err)
	}
	return out, nil
}
