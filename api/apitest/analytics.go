package apitest

import (
	"context"
	"time"

	"github.com/hyper2kvm/hyper2kvm/agent/analytics"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
)

// Analytics computes the summary from the fake's jobs, as the agent does
// from its records.
func (f *Fake) Analytics(ctx context.Context, since, until time.Time) (analytics.Summary, error) {
	list, err := f.ListJobs(ctx, apitype.Filter{})
	if err != nil {
		return analytics.Summary{}, err
	}
	return analytics.Compute(list, "fakehost", since, until.Add(1)), nil
}
