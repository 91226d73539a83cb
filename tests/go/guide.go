// The Go side of tests/go_interop.rs: the guide's RedisTask, its builders and its consumer,
// written from the guide with Go's standard library only, so that our producer and consumer
// are checked against what a Go service really marshals and really applies.
//
//	guide emit PREFIX        prints one task a line, "name<TAB>json", as Go services publish them
//	guide apply REDIS_ADDR   reads task JSON a line from stdin, decodes each into the guide's
//	                         struct, applies it to Redis as the guide's consumer does, and prints
//	                         one JSON report a line: what Go decoded and what Redis answered
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// CommandType is the guide's task type.
type CommandType string

const (
	CmdSimple   CommandType = "simple"
	CmdPipeline CommandType = "pipeline"
	CmdLua      CommandType = "lua"
)

// RedisTask is the guide's struct, tags as its services marshal them (no omitempty).
type RedisTask struct {
	Type         CommandType   `json:"type"`
	Command      string        `json:"command"`
	Args         []interface{} `json:"args"`
	PipelineCmds []RedisCmd    `json:"pipeline_cmds"`
	LuaScript    string        `json:"lua_script"`
	LuaKeys      []string      `json:"lua_keys"`
	LuaArgs      []interface{} `json:"lua_args"`
	TraceID      string        `json:"trace_id"`
	UserUUID     string        `json:"user_uuid"`
	DeviceID     string        `json:"device_id"`
	Timestamp    time.Time     `json:"timestamp"`
	RetryCount   int           `json:"retry_count"`
	MaxRetries   int           `json:"max_retries"`
	OriginalErr  string        `json:"original_err"`
	Source       string        `json:"source"`
}

// RedisCmd is one command of a pipeline task.
type RedisCmd struct {
	Command string        `json:"command"`
	Args    []interface{} `json:"args"`
}

// DelOnlyTask is what the later Go services' go-redis hook publishes: the keys to delete whole.
type DelOnlyTask struct {
	Keys         []string  `json:"keys"`
	TraceID      string    `json:"trace_id,omitempty"`
	SpanID       string    `json:"span_id,omitempty"`
	ParentSpanID string    `json:"parent_span_id,omitempty"`
	UserUUID     string    `json:"user_uuid,omitempty"`
	DeviceID     string    `json:"device_id,omitempty"`
	Timestamp    time.Time `json:"timestamp"`
	OriginalErr  string    `json:"original_err"`
	Source       string    `json:"source,omitempty"`
}

func newTask(t CommandType) RedisTask {
	return RedisTask{Type: t, Timestamp: time.Now(), MaxRetries: 3}
}

func BuildDelTask(key string) RedisTask {
	t := newTask(CmdSimple)
	t.Command, t.Args = "del", []interface{}{key}
	return t
}

func BuildSetTask(key string, val interface{}, ttl time.Duration) RedisTask {
	t := newTask(CmdSimple)
	t.Command, t.Args = "set", []interface{}{key, val}
	if ttl > 0 {
		t.Args = append(t.Args, "EX", int(ttl.Seconds()))
	}
	return t
}

func BuildHSetTask(key, field string, value interface{}) RedisTask {
	t := newTask(CmdSimple)
	t.Command, t.Args = "hset", []interface{}{key, field, value}
	return t
}

func BuildHDelTask(key string, fields ...string) RedisTask {
	t := newTask(CmdSimple)
	t.Command, t.Args = "hdel", []interface{}{key}
	for _, f := range fields {
		t.Args = append(t.Args, f)
	}
	return t
}

func BuildSAddTask(key string, members ...interface{}) RedisTask {
	t := newTask(CmdSimple)
	t.Command, t.Args = "sadd", append([]interface{}{key}, members...)
	return t
}

func BuildSRemTask(key string, members ...interface{}) RedisTask {
	t := newTask(CmdSimple)
	t.Command, t.Args = "srem", append([]interface{}{key}, members...)
	return t
}

func BuildPipelineTask(cmds []RedisCmd) RedisTask {
	t := newTask(CmdPipeline)
	t.PipelineCmds = cmds
	return t
}

func BuildLuaTask(script string, keys []string, args ...interface{}) RedisTask {
	t := newTask(CmdLua)
	t.LuaScript, t.LuaKeys, t.LuaArgs = script, keys, args
	return t
}

func (t RedisTask) WithContext(traceID, userUUID, deviceID string) RedisTask {
	t.TraceID, t.UserUUID, t.DeviceID = traceID, userUUID, deviceID
	return t
}

func (t RedisTask) WithError(err error) RedisTask {
	t.OriginalErr = err.Error()
	return t
}

func (t RedisTask) WithSource(source string) RedisTask {
	t.Source = source
	return t
}

func (t RedisTask) WithMaxRetries(n int) RedisTask {
	t.MaxRetries = n
	return t
}

func emit(prefix string) {
	// The guide's services run in UTC+8: timestamps carry that offset, as theirs do.
	time.Local = time.FixedZone("CST", 8*3600)
	k := func(name string) string { return prefix + name }
	refused := errors.New("dial tcp 10.0.0.7:6379: connect: connection refused")
	// Two distinct writes whose messages are byte for byte the same: one instant, one key.
	incr := newTask(CmdSimple)
	incr.Command, incr.Args = "incr", []interface{}{k("counter")}
	incr = incr.WithSource("CounterRepository.Incr")
	zadd := newTask(CmdSimple)
	zadd.Command, zadd.Args = "zadd", []interface{}{k("z"), 1.5, "m"}
	later := DelOnlyTask{
		Keys:    []string{k("later:a"), k("later:b")},
		TraceID: "trace-later", SpanID: "span-later", ParentSpanID: "parent-later",
		UserUUID: "u-later", DeviceID: "d-later", Timestamp: time.Now(),
		OriginalErr: refused.Error(), Source: "user-service.pipeline",
	}
	tasks := []struct {
		name string
		task interface{}
	}{
		{"del", BuildDelTask(k("del")).WithContext("trace-1", "u-1", "d-1").WithError(refused).WithSource("UserRepository.DeleteUserCache")},
		{"set_ttl", BuildSetTask(k("set"), "token-1", 5*time.Minute).WithSource("DeviceRepository.SaveToken")},
		{"set_number", BuildSetTask(k("set:n"), 42, 0)},
		{"hset", BuildHSetTask(k("h"), "name", "Alice")},
		{"hset_number", BuildHSetTask(k("h"), "age", 42)},
		{"hdel", BuildHDelTask(k("h2"), "cache", "temp")},
		{"sadd", BuildSAddTask(k("s"), "user2", "user3")},
		{"srem", BuildSRemTask(k("s2"), "user2")},
		{"zadd_float", zadd},
		{"pipeline", BuildPipelineTask([]RedisCmd{
			{Command: "del", Args: []interface{}{k("p:info")}},
			{Command: "set", Args: []interface{}{k("p:session"), "s", "EX", 60}},
			{Command: "sadd", Args: []interface{}{k("p:set"), "a", 7}},
		}).WithSource("UserRepository.DeleteUserCacheAndRelation")},
		{"lua", BuildLuaTask("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('EXPIRE', KEYS[1], ARGV[2])", []string{k("lua")}, "from-lua", 120)},
		{"incr_1", incr},
		{"incr_2", incr},
		{"max_retries_500", BuildDelTask(k("mr:500")).WithMaxRetries(500)},
		{"max_retries_0", BuildDelTask(k("mr:0")).WithMaxRetries(0)},
		{"max_retries_negative", BuildDelTask(k("mr:neg")).WithMaxRetries(-1)},
		{"del_only", later},
	}
	for _, t := range tasks {
		b, err := json.Marshal(t.task)
		if err != nil {
			fail("marshal %s: %v", t.name, err)
		}
		fmt.Printf("%s\t%s\n", t.name, b)
	}
}

// report is what `apply` prints for one task: what Go decoded, and what Redis answered.
type report struct {
	Decoded   bool       `json:"decoded"`
	Error     string     `json:"error,omitempty"`
	Type      string     `json:"type"`
	Commands  [][]string `json:"commands"`
	TraceID   string     `json:"trace_id"`
	UserUUID  string     `json:"user_uuid"`
	DeviceID  string     `json:"device_id"`
	Timestamp string     `json:"timestamp"`
	Retry     int        `json:"retry_count"`
	Max       int        `json:"max_retries"`
	Original  string     `json:"original_err"`
	Source    string     `json:"source"`
	Applied   bool       `json:"applied"`
}

func apply(addr string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		fail("redis: %v", err)
	}
	r := &resp{conn: conn, in: bufio.NewReader(conn)}
	lines := bufio.NewScanner(os.Stdin)
	lines.Buffer(make([]byte, 1<<20), 8<<20)
	out := json.NewEncoder(os.Stdout)
	for lines.Scan() {
		var task RedisTask
		rep := report{}
		if err := json.Unmarshal(lines.Bytes(), &task); err != nil {
			rep.Error = err.Error()
			_ = out.Encode(rep)
			continue
		}
		rep.Decoded = true
		rep.Type, rep.TraceID, rep.UserUUID, rep.DeviceID = string(task.Type), task.TraceID, task.UserUUID, task.DeviceID
		rep.Timestamp = task.Timestamp.UTC().Format(time.RFC3339Nano)
		rep.Retry, rep.Max, rep.Original, rep.Source = task.RetryCount, task.MaxRetries, task.OriginalErr, task.Source
		cmds, err := commands(task)
		if err == nil {
			rep.Commands = cmds
			err = r.execute(task.Type, cmds)
		}
		if err != nil {
			rep.Error = err.Error()
		} else {
			rep.Applied = true
		}
		_ = out.Encode(rep)
	}
}

// commands is what the guide's consumer sends: go-redis's Do(command, args...) for each
// command, with go-redis's way of writing each kind of argument.
func commands(task RedisTask) ([][]string, error) {
	line := func(name string, args []interface{}) ([]string, error) {
		out := []string{name}
		for _, a := range args {
			s, err := goRedisArg(a)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	switch task.Type {
	case CmdSimple:
		c, err := line(task.Command, task.Args)
		return [][]string{c}, err
	case CmdPipeline:
		var all [][]string
		for _, cmd := range task.PipelineCmds {
			c, err := line(cmd.Command, cmd.Args)
			if err != nil {
				return nil, err
			}
			all = append(all, c)
		}
		return all, nil
	case CmdLua:
		args := []interface{}{task.LuaScript, len(task.LuaKeys)}
		for _, k := range task.LuaKeys {
			args = append(args, k)
		}
		c, err := line("eval", append(args, task.LuaArgs...))
		return [][]string{c}, err
	default:
		return nil, fmt.Errorf("unknown command type: %s", task.Type)
	}
}

// goRedisArg writes an argument as go-redis's appendArg does for what encoding/json yields.
func goRedisArg(a interface{}) (string, error) {
	switch v := a.(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case int:
		return strconv.Itoa(v), nil
	case bool:
		if v {
			return "1", nil
		}
		return "0", nil
	default:
		return "", fmt.Errorf("redis: can't marshal %T (implement encoding.BinaryMarshaler)", a)
	}
}

// resp is the least of a Redis client: requests as arrays of bulk strings, pipelined.
type resp struct {
	conn net.Conn
	in   *bufio.Reader
}

func (r *resp) execute(kind CommandType, cmds [][]string) error {
	var b strings.Builder
	for _, c := range cmds {
		fmt.Fprintf(&b, "*%d\r\n", len(c))
		for _, a := range c {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
	}
	if _, err := io.WriteString(r.conn, b.String()); err != nil {
		return err
	}
	var first error
	for range cmds {
		if err := r.reply(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (r *resp) reply() error {
	line, err := r.in.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimRight(line, "\r\n")
	switch line[0] {
	case '+', ':':
		return nil
	case '-':
		return errors.New(line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n >= 0 {
			_, err = io.CopyN(io.Discard, r.in, int64(n)+2)
		}
		return err
	case '*':
		n, _ := strconv.Atoi(line[1:])
		var first error
		for i := 0; i < n; i++ {
			if err := r.reply(); err != nil && first == nil {
				first = err
			}
		}
		return first
	default:
		return fmt.Errorf("unexpected reply %q", line)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "guide: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: guide emit PREFIX | guide apply REDIS_ADDR")
	}
	switch os.Args[1] {
	case "emit":
		emit(os.Args[2])
	case "apply":
		apply(os.Args[2])
	default:
		fail("unknown command %q", os.Args[1])
	}
}
