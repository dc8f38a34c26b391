package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/hyper2kvm/hyper2kvm/agent/apierr"
	"github.com/hyper2kvm/hyper2kvm/agent/apitype"
	"github.com/hyper2kvm/hyper2kvm/agent/jobs"
)

// byName says how a verb takes a job's name where an id was expected, as
// systemctl takes a unit's name: reading verbs follow the most recent job
// of that name; verbs that change a job want exactly one.
type byName int

const (
	newestOfName byName = iota
	onlyOfName
)

// resolve turns what the user typed into a job id: an id as it is, a unit
// name (hyper2kvm-job-ID.service), or a job's name.
func (a *app) resolve(ctx context.Context, c agentClient, arg string, how byName) (string, error) {
	if id, ok := jobs.IDFromUnit(arg); ok {
		arg = id
	}
	_, err := c.GetJob(ctx, arg)
	var ae *apierr.Error
	if err == nil || !errors.As(err, &ae) || ae.Kind != apierr.NoSuchJob {
		// An id, or an error the verb's own call will report with
		// what it was doing.
		return arg, nil
	}
	all, lerr := c.ListJobs(ctx, apitype.Filter{})
	if lerr != nil {
		return arg, err
	}
	id, note, nerr := pickByName(all, arg, how)
	if nerr != nil {
		return arg, &exitError{code: exitFailed, err: nerr}
	}
	if id == "" {
		return arg, err
	}
	if note != "" {
		fmt.Fprintln(a.env.stderr, note)
	}
	return id, nil
}

// pickByName finds the jobs called name; "" when there is none.
func pickByName(all []jobs.Job, name string, how byName) (id, note string, err error) {
	var match []jobs.Job
	for _, j := range all {
		if j.Name == name {
			match = append(match, j)
		}
	}
	switch {
	case len(match) == 0:
		return "", "", nil
	case len(match) == 1:
		return match[0].ID, "", nil
	}
	sort.Slice(match, func(i, k int) bool { return match[i].CreatedAt.After(match[k].CreatedAt) })
	var ids []string
	for _, j := range match {
		ids = append(ids, fmt.Sprintf("%s (%s, %s)", j.ID, j.State, j.CreatedAt.Local().Format("2006-01-02 15:04")))
	}
	if how == onlyOfName {
		return "", "", fmt.Errorf("%d jobs are named %q: %s; give the id", len(match), name, strings.Join(ids, ", "))
	}
	return match[0].ID, fmt.Sprintf("%d jobs are named %q; showing the most recent, %s (others: %s)",
		len(match), name, match[0].ID, strings.Join(ids[1:], ", ")), nil
}
