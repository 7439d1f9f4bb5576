#!/usr/bin/env node
// Consumer groups through kafkajs's public consumer (its own JoinGroup, SyncGroup, Heartbeat,
// OffsetCommit, OffsetFetch and LeaveGroup code, and its read_committed fetches).
//
// Usage: node group.js BOOTSTRAP TOPIC N
//
// 1. Admin creates TOPIC with 3 partitions. Two consumers join group A and subscribe; the
//    script waits until their assignments split the 3 partitions between them.
// 2. N keyed messages are produced. Group A reads each exactly once, each partition by the one
//    member that owns it, in order, at the offsets the producer was told. Each member commits
//    the offsets after what it read (autoCommit off, commitOffsets).
// 3. One member leaves (LeaveGroup). The other is given all 3 partitions, reads the M = N / 2
//    messages produced next and nothing else (it resumes from the leaver's commits), and
//    commits. admin.fetchOffsets shows group A committed up to every high watermark.
// 4. A consumer in group B reads all N + M from the beginning (groups are independent).
// 5. admin.describeGroups shows group A Empty once its members left; admin.deleteGroups
//    removes it, and listGroups no longer lists it while group B stays.
//
// Exits 0 when every check passes; otherwise prints what differed and exits 1.
'use strict'

const { Kafka, logLevel } = require('kafkajs')
const common = require('./common')

const { fail, sleep } = common

const DEADLINE_MS = 60000

const until = (what, check) => common.until(what, check, DEADLINE_MS)

// A consumer that records what it reads and the assignment of its latest generation.
class Member {
  constructor(kafka, groupId, name) {
    this.name = name
    this.read = [] // {partition, offset, key, value}
    this.assigned = null // partitions of the latest GROUP_JOIN
    this.consumer = kafka.consumer({
      groupId,
      sessionTimeout: 10000,
      heartbeatInterval: 300,
      maxWaitTimeInMs: 100,
      retry: { retries: 10 },
    })
    this.consumer.on(this.consumer.events.GROUP_JOIN, e => {
      const a = e.payload.memberAssignment
      this.assigned = Object.values(a).flat().sort()
    })
  }

  async start(topic) {
    await this.consumer.connect()
    await this.consumer.subscribe({ topics: [topic], fromBeginning: true })
    await this.consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        this.read.push({
          partition,
          offset: BigInt(message.offset),
          key: message.key.toString(),
          value: message.value.toString(),
        })
      },
    })
  }

  // Commits, for every partition it read, the offset after the last message read.
  async commit(topic) {
    const next = new Map()
    for (const m of this.read) next.set(m.partition, m.offset + 1n)
    const offsets = [...next].map(([partition, o]) => ({ topic, partition, offset: o.toString() }))
    if (offsets.length > 0) await this.consumer.commitOffsets(offsets)
    return offsets.length
  }
}

async function produce(kafka, topic, prefix, n) {
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const messages = []
  for (let i = 0; i < n; i++) messages.push({ key: `${prefix}-${i}`, value: `v-${prefix}-${i}` })
  for (let start = 0; start < n; start += 100) {
    const chunk = messages.slice(start, start + 100)
    await producer.send({ topic, acks: -1, messages: chunk })
  }
  await producer.disconnect()
  return messages.map(m => m.key)
}

// Every key of `keys` read exactly once in `read`, with offsets rising per partition.
function checkOnce(what, read, keys) {
  const want = new Set(keys)
  const seen = new Set()
  const last = new Map()
  for (const m of read) {
    if (!want.has(m.key)) fail(`${what}: read unexpected key ${m.key}`)
    if (seen.has(m.key)) fail(`${what}: read ${m.key} twice`)
    if (m.value !== `v-${m.key}`) fail(`${what}: ${m.key} has value ${m.value}`)
    seen.add(m.key)
    if (last.has(m.partition) && last.get(m.partition) >= m.offset) {
      fail(`${what}: partition ${m.partition} offset ${m.offset} after ${last.get(m.partition)}`)
    }
    last.set(m.partition, m.offset)
  }
  if (seen.size !== want.size) fail(`${what}: read ${seen.size} of ${want.size} keys`)
}

async function main() {
  const [bootstrap, topic, nArg] = process.argv.slice(2)
  if (!bootstrap || !topic || !nArg) {
    console.error('usage: group.js BOOTSTRAP TOPIC N')
    process.exit(2)
  }
  const n = parseInt(nArg, 10)
  const m = Math.floor(n / 2)
  const groupA = `${topic}-a`
  const groupB = `${topic}-b`
  const kafka = new Kafka({
    clientId: 'kafkajs-group',
    brokers: [bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 10 },
  })
  const admin = kafka.admin()
  await admin.connect()
  const created = await admin.createTopics({
    topics: [{ topic, numPartitions: 3, replicationFactor: 1 }],
    waitForLeaders: true,
  })
  if (created !== true) fail(`createTopics returned ${created}`)

  // --- 1. two members split the partitions ---
  const one = new Member(kafka, groupA, 'one')
  const two = new Member(kafka, groupA, 'two')
  await one.start(topic)
  await two.start(topic)
  await until('two members to split 3 partitions', () => {
    const a = one.assigned
    const b = two.assigned
    if (!a || !b || a.length === 0 || b.length === 0) return false
    const all = [...a, ...b].sort()
    return all.length === 3 && all.every((p, i) => p === i)
  })
  const described = await admin.describeGroups([groupA])
  const g = described.groups[0]
  if (g.state !== 'Stable' || g.members.length !== 2) {
    fail(`group A after the split: state ${g.state}, ${g.members.length} members`)
  }
  console.log(`group A: one owns [${one.assigned}], two owns [${two.assigned}]`)

  // --- 2. each message once, by its partition's owner ---
  const first = await produce(kafka, topic, 'a', n)
  await until(`group A to read ${n} messages`, () => one.read.length + two.read.length >= n)
  await sleep(300) // anything read twice arrives now
  checkOnce('group A', [...one.read, ...two.read], first)
  for (const member of [one, two]) {
    for (const r of member.read) {
      if (!member.assigned.includes(r.partition)) {
        fail(`member ${member.name} read partition ${r.partition}, owns [${member.assigned}]`)
      }
    }
  }
  await one.commit(topic)
  await two.commit(topic)
  console.log(`group A read ${n} messages once: ${one.read.length} by one, ${two.read.length} by two`)

  // --- 3. one leaves; the other takes every partition and resumes from the commits ---
  await one.consumer.disconnect()
  await until('member two to own all 3 partitions', () => two.assigned.length === 3)
  const before = two.read.length
  const second = await produce(kafka, topic, 'b', m)
  await until(`member two to read ${m} more`, () => two.read.length >= before + m)
  await sleep(300)
  checkOnce('member two after the rebalance', two.read.slice(before), second)
  await two.commit(topic)
  await two.consumer.disconnect()
  const ends = await admin.fetchTopicOffsets(topic)
  const committed = await admin.fetchOffsets({ groupId: groupA, topics: [topic] })
  for (const e of ends) {
    const c = committed[0].partitions.find(p => p.partition === e.partition)
    if (!c || c.offset !== e.high) {
      fail(`group A committed ${c && c.offset} for partition ${e.partition}, high watermark ${e.high}`)
    }
  }
  console.log(`member two read the ${m} new messages once; group A committed every high watermark`)

  // --- 4. another group reads everything ---
  const other = new Member(kafka, groupB, 'other')
  await other.start(topic)
  await until(`group B to read ${n + m} messages`, () => other.read.length >= n + m)
  await sleep(300)
  checkOnce('group B', other.read, [...first, ...second])
  await other.commit(topic)
  await other.consumer.disconnect()
  console.log(`group B read all ${n + m} messages`)

  // --- 5. admin sees the groups and deletes one ---
  const empty = (await admin.describeGroups([groupA])).groups[0]
  if (empty.state !== 'Empty' || empty.members.length !== 0) {
    fail(`group A after both left: state ${empty.state}, ${empty.members.length} members`)
  }
  const listed = (await admin.listGroups()).groups.map(x => x.groupId)
  if (!listed.includes(groupA) || !listed.includes(groupB)) fail(`listGroups: ${listed}`)
  await admin.deleteGroups([groupA])
  const after = (await admin.listGroups()).groups.map(x => x.groupId)
  if (after.includes(groupA) || !after.includes(groupB)) fail(`listGroups after delete: ${after}`)
  await admin.disconnect()
  console.log('admin: group A described Empty and deleted; group B stays')
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
