#!/usr/bin/env node
// Round trip through kafkajs (pure JavaScript, its own protocol implementation).
//
// Usage: node roundtrip.js BOOTSTRAP TOPIC N
//
// 1. Admin: createTopics (3 partitions, retention.ms override), fetchTopicMetadata,
//    describeConfigs (the override comes back), listTopics.
// 2. Producer with idempotent: true (InitProducerId + sequence numbers) sends N keyed messages
//    with acks -1, in several send() calls; kafkajs's default partitioner spreads them by key.
// 3. Read back, partition by partition from offset 0. (kafkajs's public consumer reads through
//    a consumer group; group.js tests that.) To check every message at the exact offset the
//    producer was told, this uses kafkajs's own lower-level client underneath the consumer:
//    its Cluster (metadata, leader lookup) and Broker.fetch (the same Fetch request encoder and
//    record-batch decoder the consumer uses), reading every partition from offset 0 to the
//    high watermark that admin.fetchTopicOffsets reports. That cluster is reached through a private symbol of the Kafka object, so it is
//    tied to the pinned kafkajs version (package.json).
//
// Exits 0 when every message came back exactly once, at the partition and offset the producer
// was told, in per-partition order, with identical key and value; non-zero otherwise.
'use strict'

const crypto = require('crypto')
const { Kafka, Partitioners, logLevel } = require('kafkajs')
const { fail } = require('./common')

// Deterministic 300 bytes per message: every byte is checkable.
function value(i) {
  const parts = []
  for (let block = 0; block * 32 < 300; block++) {
    parts.push(crypto.createHash('sha256').update(`js-${i}-${block}`).digest())
  }
  return Buffer.concat(parts).subarray(0, 300)
}

async function main() {
  const [bootstrap, topic, nArg] = process.argv.slice(2)
  if (!bootstrap || !topic || !nArg) {
    console.error('usage: roundtrip.js BOOTSTRAP TOPIC N')
    process.exit(2)
  }
  const n = parseInt(nArg, 10)
  const kafka = new Kafka({
    clientId: 'kafkajs-roundtrip',
    brokers: [bootstrap],
    logLevel: logLevel.ERROR,
    retry: { retries: 5 },
  })

  // --- admin ---
  const admin = kafka.admin()
  await admin.connect()
  const created = await admin.createTopics({
    topics: [
      {
        topic,
        numPartitions: 3,
        replicationFactor: 1,
        configEntries: [{ name: 'retention.ms', value: '86400000' }],
      },
    ],
    waitForLeaders: true,
  })
  if (created !== true) fail(`createTopics returned ${created}`)
  const md = await admin.fetchTopicMetadata({ topics: [topic] })
  const parts = md.topics[0].partitions
  if (parts.length !== 3 || parts.some(p => p.leader !== 1)) {
    fail(`metadata: ${JSON.stringify(md)}`)
  }
  const cfg = await admin.describeConfigs({
    includeSynonyms: false,
    resources: [{ type: 2 /* TOPIC */, name: topic, configNames: ['retention.ms'] }],
  })
  const entry = cfg.resources[0].configEntries.find(e => e.configName === 'retention.ms')
  if (!entry || entry.configValue !== '86400000' || entry.isDefault) {
    fail(`describeConfigs retention.ms: ${JSON.stringify(cfg.resources[0])}`)
  }
  const listed = await admin.listTopics()
  if (!listed.includes(topic)) fail(`listTopics lacks ${topic}: ${listed}`)
  console.log(`admin: created ${topic} with 3 partitions, retention.ms override described`)

  // --- idempotent producer, acks -1 ---
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const sent = new Array(n) // i -> [partition, offset]
  const chunk = 100
  for (let start = 0; start < n; start += chunk) {
    const messages = []
    for (let i = start; i < Math.min(n, start + chunk); i++) {
      messages.push({ key: `k${i}`, value: value(i) })
    }
    const res = await producer.send({ topic, acks: -1, messages })
    // One RecordMetadata per partition written: its base offset is that partition's first
    // message of this call; messages keep their order within a partition.
    const base = new Map(res.map(r => [r.partition, BigInt(r.baseOffset)]))
    const next = new Map()
    for (let i = start; i < start + messages.length; i++) {
      const p = partitionFor(topic, messages[i - start])
      const off = base.get(p) + (next.get(p) || 0n)
      next.set(p, (next.get(p) || 0n) + 1n)
      sent[i] = [p, off]
    }
  }
  await producer.disconnect()
  console.log(`produced ${n} messages with acks -1, idempotent`)

  const ends = await admin.fetchTopicOffsets(topic)
  const high = new Map(ends.map(o => [o.partition, BigInt(o.high)]))
  let total = 0n
  for (const [p, h] of high) {
    if (BigInt(ends.find(o => o.partition === p).low) !== 0n) fail(`partition ${p} low != 0`)
    total += h
  }
  if (total !== BigInt(n)) fail(`high watermarks sum to ${total}, expected ${n}`)

  // --- read back through kafkajs's Fetch implementation ---
  const createCluster = kafka[
    Object.getOwnPropertySymbols(kafka).find(s => s.description === 'private:Kafka:createCluster')
  ]
  if (typeof createCluster !== 'function') fail('kafkajs internals changed: no createCluster')
  const cluster = createCluster({ allowAutoTopicCreation: false })
  await cluster.connect()
  await cluster.addTargetTopic(topic)
  const got = [] // {partition, offset, key, value}
  for (const pm of cluster.findTopicPartitionMetadata(topic)) {
    const partition = pm.partitionId
    const broker = await cluster.findBroker({ nodeId: pm.leader })
    let offset = 0n
    const deadline = Date.now() + 60000
    while (offset < high.get(partition)) {
      if (Date.now() > deadline) fail(`fetch ${topic}-${partition} stuck at ${offset}`)
      const resp = await broker.fetch({
        replicaId: -1,
        isolationLevel: 0,
        maxWaitTime: 200,
        minBytes: 1,
        maxBytes: 4 << 20,
        topics: [{ topic, partitions: [{ partition, fetchOffset: offset.toString(), maxBytes: 1 << 20 }] }],
      })
      const pr = resp.responses[0].partitions[0]
      if (pr.errorCode !== 0) fail(`fetch ${topic}-${partition}@${offset}: error ${pr.errorCode}`)
      for (const m of pr.messages) {
        const o = BigInt(m.offset)
        if (o < offset) continue // a batch can start before the requested offset
        if (o !== offset) fail(`partition ${partition}: offset ${o} after ${offset - 1n}`)
        got.push({ partition, offset: o, key: m.key, value: m.value })
        offset = o + 1n
      }
    }
  }
  await cluster.disconnect()
  await admin.disconnect()

  if (got.length !== n) fail(`read ${got.length} of ${n} messages`)
  const seen = new Array(n).fill(false)
  const lastIndex = new Map()
  for (const m of got) {
    const key = m.key.toString()
    const i = parseInt(key.slice(1), 10)
    if (!key.startsWith('k') || !(i >= 0 && i < n)) fail(`unexpected key ${key}`)
    if (seen[i]) fail(`message ${i} read twice`)
    seen[i] = true
    const [p, off] = sent[i]
    if (m.partition !== p || m.offset !== off) {
      fail(`message ${i} at ${m.partition}/${m.offset}, producer was told ${p}/${off}`)
    }
    if (!value(i).equals(m.value)) fail(`message ${i}: value differs`)
    if (lastIndex.has(p) && lastIndex.get(p) > i) fail(`partition ${p} out of order at ${i}`)
    lastIndex.set(p, i)
  }
  console.log(`read back ${n} messages from ${high.size} partitions, all match`)
}

// The partition kafkajs chose for the j-th message of a send(): kafkajs returns one
// RecordMetadata per partition, not per message, so recompute it with the same default
// (murmur2, Java-compatible) partitioner the producer used. All partitions are led by node 1.
const defaultPartitioner = Partitioners.DefaultPartitioner()
const threePartitions = [0, 1, 2].map(partitionId => ({ partitionId, leader: 1 }))
function partitionFor(topic, message) {
  return defaultPartitioner({ topic, partitionMetadata: threePartitions, message })
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
