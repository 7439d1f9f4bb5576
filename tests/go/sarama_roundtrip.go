// Round trip through Sarama, the Go client with its own protocol implementation, as Debian
// packages it (golang-github-shopify-sarama-dev; built offline in GOPATH mode).
//
// Usage: sarama_roundtrip BOOTSTRAP TOPIC N
//
//  1. ClusterAdmin creates TOPIC with 3 partitions and a retention.ms override, describes it,
//     describes its configs (DescribeConfigs v0: the override is the one non-default value)
//     and lists it with ListTopics (Metadata v0, then DescribeConfigs v0 of every topic).
//     Its ACL calls (v0) are answered, with nothing listed or matched.
//  2. An idempotent SyncProducer (acks WaitForAll) sends N keyed messages and notes the
//     partition and offset each was given.
//  3. A ConsumerGroup in group A reads every message exactly once, at the partition and offset
//     the producer was told, with its key and value, in order per partition; it marks each one
//     and commits when it closes. ClusterAdmin.ListConsumerGroupOffsets then shows group A's
//     commits at every partition's newest offset.
//  4. A ConsumerGroup in group B reads all N again (groups are independent).
//
// Exits 0 when every check passes; otherwise prints what differed and exits 1.
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const deadline = 60 * time.Second

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "FAIL: "+format+"\n", args...)
	os.Exit(1)
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "sarama-roundtrip"
	c.Admin.Timeout = 30 * time.Second
	c.Producer.Idempotent = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Retry.Max = 10
	c.Producer.Return.Successes = true
	c.Net.MaxOpenRequests = 1
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	c.Consumer.Group.Heartbeat.Interval = 500 * time.Millisecond
	c.Consumer.MaxWaitTime = 100 * time.Millisecond
	return c
}

type where struct {
	partition int32
	offset    int64
}

type read struct {
	where
	key, value string
}

// collector is a ConsumerGroupHandler that records and marks every message it is given.
type collector struct {
	mu   sync.Mutex
	got  []read
	want int
	done chan struct{}
	once sync.Once
}

func (h *collector) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *collector) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *collector) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		h.mu.Lock()
		h.got = append(h.got, read{where{m.Partition, m.Offset}, string(m.Key), string(m.Value)})
		if len(h.got) >= h.want {
			h.once.Do(func() { close(h.done) })
		}
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

// consume runs a group member until it has read `want` messages, then closes it (which
// commits what it marked) and returns what it read.
func consume(bootstrap []string, topic, group string, want int) []read {
	g, err := sarama.NewConsumerGroup(bootstrap, group, config())
	if err != nil {
		fail("NewConsumerGroup %s: %v", group, err)
	}
	h := &collector{want: want, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{topic}, h); err != nil {
				stopped <- err
				return
			}
		}
		stopped <- nil
	}()
	select {
	case <-h.done:
	case err := <-stopped:
		fail("group %s stopped: %v", group, err)
	case <-time.After(deadline):
		h.mu.Lock()
		fail("group %s read %d of %d messages", group, len(h.got), want)
	}
	time.Sleep(300 * time.Millisecond) // anything read twice arrives now
	cancel()
	if err := <-stopped; err != nil {
		fail("group %s: %v", group, err)
	}
	if err := g.Close(); err != nil {
		fail("close group %s: %v", group, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]read(nil), h.got...)
}

// check: every message once, where the producer was told, in order per partition.
func check(what string, got []read, sent map[string]where) {
	if len(got) != len(sent) {
		fail("%s read %d messages, %d were sent", what, len(got), len(sent))
	}
	seen := map[string]bool{}
	last := map[int32]int64{}
	for _, r := range got {
		w, ok := sent[r.key]
		if !ok || seen[r.key] {
			fail("%s: key %q unexpected or read twice", what, r.key)
		}
		seen[r.key] = true
		if r.where != w {
			fail("%s: %s at %d/%d, the producer was told %d/%d", what, r.key, r.partition, r.offset, w.partition, w.offset)
		}
		if r.value != "v-"+r.key {
			fail("%s: %s has value %q", what, r.key, r.value)
		}
		if l, ok := last[r.partition]; ok && l >= r.offset {
			fail("%s: partition %d offset %d after %d", what, r.partition, r.offset, l)
		}
		last[r.partition] = r.offset
	}
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: sarama_roundtrip BOOTSTRAP TOPIC N")
		os.Exit(2)
	}
	if os.Getenv("SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Lmicroseconds)
	}
	bootstrap, topic := []string{os.Args[1]}, os.Args[2]
	n, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fail("N: %v", err)
	}

	// --- 1. admin ---
	admin, err := sarama.NewClusterAdmin(bootstrap, config())
	if err != nil {
		fail("NewClusterAdmin: %v", err)
	}
	retention := "86400000"
	detail := &sarama.TopicDetail{
		NumPartitions:     3,
		ReplicationFactor: 1,
		ConfigEntries:     map[string]*string{"retention.ms": &retention},
	}
	if err := admin.CreateTopic(topic, detail, false); err != nil {
		fail("CreateTopic: %v", err)
	}
	md, err := admin.DescribeTopics([]string{topic})
	if err != nil || len(md) != 1 || md[0].Err != sarama.ErrNoError || len(md[0].Partitions) != 3 {
		fail("DescribeTopics: %v %+v", err, md)
	}
	// DescribeConfigs v0: the override is not default, the rest are.
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		fail("DescribeConfig: %v", err)
	}
	described := map[string]sarama.ConfigEntry{}
	for _, e := range entries {
		described[e.Name] = e
	}
	if e, ok := described["retention.ms"]; !ok || e.Value != retention || e.Default {
		fail("DescribeConfig retention.ms: %+v", described["retention.ms"])
	}
	if e, ok := described["segment.bytes"]; !ok || !e.Default {
		fail("DescribeConfig segment.bytes: %+v", described["segment.bytes"])
	}
	// ListTopics: Metadata v0 for all topics, then DescribeConfigs v0 of each; only
	// non-default configs are listed.
	topics, err := admin.ListTopics()
	if err != nil {
		fail("ListTopics: %v", err)
	}
	listed, ok := topics[topic]
	if !ok || listed.NumPartitions != 3 || listed.ReplicationFactor != 1 ||
		len(listed.ConfigEntries) != 1 || listed.ConfigEntries["retention.ms"] == nil ||
		*listed.ConfigEntries["retention.ms"] != retention {
		fail("ListTopics %s: %+v", topic, listed)
	}
	fmt.Printf("admin: created %s with 3 partitions; its retention.ms override described and listed\n", topic)
	// ACLs: Sarama 1.22 sends v0 of CreateAcls, DescribeAcls and DeleteAcls and ignores the
	// answers' error codes (the broker's is SECURITY_DISABLED: no authorizer), so what shows
	// here is that each call is answered, not cut off, and that nothing is listed or matched.
	acl := sarama.Acl{Principal: "User:alice", Host: "*", Operation: sarama.AclOperationRead,
		PermissionType: sarama.AclPermissionAllow}
	if err := admin.CreateACL(sarama.Resource{ResourceType: sarama.AclResourceTopic,
		ResourceName: topic, ResoucePatternType: sarama.AclPatternLiteral}, acl); err != nil {
		fail("CreateACL: %v", err)
	}
	anything := sarama.AclFilter{ResourceType: sarama.AclResourceAny,
		Operation: sarama.AclOperationAny, PermissionType: sarama.AclPermissionAny}
	if acls, err := admin.ListAcls(anything); err != nil || len(acls) != 0 {
		fail("ListAcls: %v %+v", err, acls)
	}
	if matched, err := admin.DeleteACL(anything, false); err != nil || len(matched) != 0 {
		fail("DeleteACL: %v %+v", err, matched)
	}
	fmt.Println("admin: ACL calls answered (v0), none listed or matched")

	// --- 2. idempotent producer, acks all ---
	producer, err := sarama.NewSyncProducer(bootstrap, config())
	if err != nil {
		fail("NewSyncProducer: %v", err)
	}
	sent := map[string]where{}
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("go-%d", i)
		p, o, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic: topic, Key: sarama.StringEncoder(key), Value: sarama.StringEncoder("v-" + key),
		})
		if err != nil {
			fail("send %s: %v", key, err)
		}
		sent[key] = where{p, o}
	}
	if err := producer.Close(); err != nil {
		fail("close producer: %v", err)
	}
	fmt.Printf("produced %d messages, idempotent, acks all\n", n)

	// --- 3. group A reads everything once and commits ---
	check("group A", consume(bootstrap, topic, topic+"-a", n), sent)
	client, err := sarama.NewClient(bootstrap, config())
	if err != nil {
		fail("NewClient: %v", err)
	}
	committed, err := admin.ListConsumerGroupOffsets(topic+"-a", map[string][]int32{topic: {0, 1, 2}})
	if err != nil {
		fail("ListConsumerGroupOffsets: %v", err)
	}
	for p := int32(0); p < 3; p++ {
		newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
		if err != nil {
			fail("GetOffset %d: %v", p, err)
		}
		b := committed.GetBlock(topic, p)
		if b == nil || b.Err != sarama.ErrNoError || b.Offset != newest {
			fail("group A committed %+v for partition %d, newest offset %d", b, p, newest)
		}
	}
	fmt.Printf("group A read %d messages once and committed every newest offset\n", n)

	// --- 4. another group reads everything too ---
	check("group B", consume(bootstrap, topic, topic+"-b", n), sent)
	fmt.Printf("group B read all %d messages\n", n)
	client.Close()
	admin.Close()
}
