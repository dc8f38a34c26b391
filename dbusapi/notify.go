package dbusapi

import (
	"context"

	"github.com/godbus/dbus/v5"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/polkit"
)

// Notifier is a Backend that sends webhooks (docs/WORKFLOW.md
// "Webhooks"). A separate interface so that backends without webhooks
// (test agents) need not implement it.
type Notifier interface {
	// NotifyTest queues a sample delivery to every webhook of
	// agent.yaml and returns their delivery ids.
	NotifyTest(ctx context.Context) ([]string, error)
}

// notifyTest is NotifyTest(): queue a sample delivery to each webhook.
// polkit: io.hyper2kvm.agent.manage (it calls the admin's URLs).
func (s *Server) notifyTest(msg dbus.Message, sender dbus.Sender) ([]string, *dbus.Error) {
	s.touch()
	what := "send a test webhook"
	if err := s.authorize(msg, sender, polkit.ActionManage, what); err != nil {
		return nil, toDBusError(err)
	}
	n, ok := s.b.(Notifier)
	if !ok {
		return nil, toDBusError(apierr.New(apierr.InvalidState, "cannot %s: this agent sends no webhooks", what))
	}
	ids, err := n.NotifyTest(s.ctx)
	if err != nil {
		return nil, toDBusError(apierr.New(apierr.InvalidState, "cannot %s: %v", what, err))
	}
	s.log.Info("test webhook queued", "sender", string(sender), "deliveries", len(ids))
	return ids, nil
}

// NotifyTest asks the agent to queue a sample delivery to every webhook
// of agent.yaml; it returns their delivery ids. Needs
// io.hyper2kvm.agent.manage.
func (c *Client) NotifyTest(ctx context.Context, interactive bool) ([]string, error) {
	call, err := c.call(ctx, "send a test webhook", ManagerPath, ManagerIface+".NotifyTest", interactive)
	if err != nil {
		return nil, err
	}
	var ids []string
	if err := call.Store(&ids); err != nil {
		return nil, err
	}
	return ids, nil
}
