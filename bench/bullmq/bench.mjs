// BullMQ through the same experiment as `cargo bench -p floodgate-core
// --bench queue`, on the same Redis: phase A, submit JOBS jobs; phase B, one
// Worker with `concurrency: CONCURRENCY` and a no-op processor runs them
// all (a BullMQ worker fetches its next job as it finishes one, as ours do
// with complete_and_lease). Submit is measured two ways, as separate runs:
// `add` from CONCURRENCY concurrent producers (one job per call, as
// Floodgate's submit) and `addBulk` in chunks of BULK_CHUNK. Jobs carry an
// id of ours and 3 attempts, as Floodgate's, and no priority (BullMQ's
// faster path: a plain wait list). Process throughput is timed from the
// first to the JOBS-th `completed` event (also from `worker.run()`, in the
// JSON line). Completed jobs are kept (`removeOnComplete: false`), as
// Floodgate keeps results; REMOVE=1 adds runs with `removeOnComplete:
// true`. Each run: a fresh queue name, a warm-up of JOBS / 5 jobs (at most
// 2,000; node's JIT needs them), a check that every job completed and none
// is left, and the queue obliterated at the end. Also reported: what Redis
// did per job (INFO commandstats and cpu) and node's own CPU per job.
//
//   JOBS=10000 CONCURRENCY=16 node bench.mjs
//   (FLOODGATE_BENCH_REDIS_URL, default redis://127.0.0.1:6379; MODES=add,bulk)
//
// One line per configuration, and one `JSON {…}` line for scripts.
import { performance } from 'node:perf_hooks';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';

const int = (name, fallback) => {
  const v = Number.parseInt(process.env[name] ?? '', 10);
  return Number.isFinite(v) && v > 0 ? v : fallback;
};
const JOBS = int('JOBS', 10000);
const CONCURRENCY = int('CONCURRENCY', 16);
const BULK_CHUNK = int('BULK_CHUNK', 1000);
const MODES = (process.env.MODES ?? 'add,bulk').split(',').map((m) => m.trim()).filter(Boolean);
const REMOVES = process.env.REMOVE === '1' ? [false, true] : [false];
const url = new URL(process.env.FLOODGATE_BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};

const VERSION = JSON.parse(readFileSync(new URL('./node_modules/bullmq/package.json', import.meta.url), 'utf8')).version;
// What Redis did during a phase, from INFO commandstats and INFO cpu before
// and after it (the bench is alone on that Redis), as the Rust bench reports.
const stats = new Redis(connection);
async function redisWork() {
  const text = await stats.info('commandstats', 'cpu');
  const work = { scripts: 0, scriptUs: 0, commands: 0, cpu: 0 };
  for (const line of text.split(/\r?\n/)) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m) {
      work.commands += Number(m[2]);
      if (m[1] === 'evalsha' || m[1] === 'eval') {
        work.scripts += Number(m[2]);
        work.scriptUs += Number(m[3]);
      }
    }
    const c = /^used_cpu_(user|sys)_main_thread:([0-9.]+)/.exec(line);
    if (c) work.cpu += Number(c[2]);
  }
  return work;
}
const workSince = (before, after, jobs, wallMs) => ({
  scripts_per_job: (after.scripts - before.scripts) / jobs,
  script_us_per_job: (after.scriptUs - before.scriptUs) / jobs,
  commands_per_job: (after.commands - before.commands) / jobs,
  cpu_us_per_job: ((after.cpu - before.cpu) * 1e6) / jobs,
  busy: ((after.cpu - before.cpu) * 1000) / wallMs,
});
const describe = (w) =>
  `${w.scripts_per_job.toFixed(2)} scripts (${w.script_us_per_job.toFixed(1)} µs), ${w.commands_per_job.toFixed(1)} commands, ` +
  `${w.cpu_us_per_job.toFixed(1)} µs CPU per job, ${(100 * w.busy).toFixed(0)} % busy`;

const data = (id) => ({ model: 'chat', messages: [{ role: 'user', content: id }] });
const jobId = (prefix, i) => `${prefix}_${String(i).padStart(8, '0')}`;

/// Adds `count` jobs named `prefix_…`; returns per-job times (ms since
/// `performance` began) at which each add returned.
async function submit(queue, mode, prefix, count, removeOnComplete) {
  const opts = (i) => ({ jobId: jobId(prefix, i), attempts: 3, removeOnComplete, removeOnFail: false });
  const times = new Float64Array(count);
  if (mode === 'bulk') {
    for (let start = 0; start < count; start += BULK_CHUNK) {
      const chunk = [];
      for (let i = start; i < Math.min(count, start + BULK_CHUNK); i++) {
        chunk.push({ name: 'chat', data: data(jobId(prefix, i)), opts: opts(i) });
      }
      await queue.addBulk(chunk);
      const now = performance.now();
      for (let i = start; i < start + chunk.length; i++) times[i] = now;
    }
  } else {
    const producers = [];
    for (let t = 0; t < CONCURRENCY; t++) {
      producers.push((async () => {
        for (let i = t; i < count; i += CONCURRENCY) {
          await queue.add('chat', data(jobId(prefix, i)), opts(i));
          times[i] = performance.now();
        }
      })());
    }
    await Promise.all(producers);
  }
  return times;
}

/// Runs the queue's `count` waiting jobs with one Worker; returns when
/// the count-th completed, with the times of the first and last
/// completion, of the start, and each job's completion time.
async function processAll(name, prefix, count) {
  const done = new Float64Array(count);
  let completed = 0;
  let first = 0;
  let last = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const worker = new Worker(name, async () => null, {
    connection,
    concurrency: CONCURRENCY,
    autorun: false,
  });
  worker.on('error', (err) => { console.error('worker error', err); });
  worker.on('completed', (job) => {
    const now = performance.now();
    if (completed === 0) first = now;
    const i = Number.parseInt(job.id.slice(prefix.length + 1), 10);
    if (job.id.startsWith(`${prefix}_`) && Number.isInteger(i) && i < count) done[i] = now;
    completed += 1;
    if (completed === count) {
      last = now;
      finish();
    }
  });
  await worker.waitUntilReady();
  const started = performance.now();
  const running = worker.run();
  await finished;
  await worker.close();
  await running;
  return { started, first, last, done, completed };
}

const quantile = (sorted, q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

async function run(mode, removeOnComplete) {
  const name = `fgqbench-${mode}-${randomUUID().slice(0, 8)}`;
  const queue = new Queue(name, { connection });
  await queue.waitUntilReady();
  try {
    const warm = Math.min(2000, Math.max(1, Math.floor(JOBS / 5)));
    await submit(queue, mode, 'warm', warm, removeOnComplete);
    const warmed = await processAll(name, 'warm', warm);
    if (warmed.completed !== warm) throw new Error(`warm-up completed ${warmed.completed} of ${warm}`);

    let before = await redisWork();
    let cpu = process.cpuUsage();
    const t0 = performance.now();
    const submitted = await submit(queue, mode, 'job', JOBS, removeOnComplete);
    const submitMs = performance.now() - t0;
    const submitCpu = process.cpuUsage(cpu);
    const submitWork = workSince(before, await redisWork(), JOBS, submitMs);
    before = await redisWork();
    cpu = process.cpuUsage();
    const p = await processAll(name, 'job', JOBS);
    const processCpu = process.cpuUsage(cpu);
    const processWork = workSince(before, await redisWork(), JOBS, p.last - p.started);
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed');
    const left = counts.waiting + counts.active + counts.delayed + counts.prioritized + counts.failed;
    const kept = removeOnComplete ? 0 : warm + JOBS;
    if (left !== 0 || counts.completed !== kept) {
      throw new Error(`after the run: ${JSON.stringify(counts)}`);
    }
    const e2e = Array.from(submitted, (s, i) => p.done[i] - s).sort((a, b) => a - b);
    if (e2e.some((v) => !(v >= 0))) throw new Error('a job without a completion time');
    const processMs = p.last - p.first;
    const perS = (n, ms) => (n * 1000) / ms;
    const r = {
      engine: 'bullmq',
      backend: 'redis',
      mode,
      remove_on_complete: removeOnComplete,
      jobs: JOBS,
      concurrency: CONCURRENCY,
      batch: 1,
      submit_s: submitMs / 1000,
      process_s: processMs / 1000,
      submit_per_s: perS(JOBS, submitMs),
      // From the first completion to the last: JOBS - 1 intervals.
      process_per_s: perS(JOBS - 1, processMs),
      process_from_start_per_s: perS(JOBS, p.last - p.started),
      whole_per_s: perS(JOBS, submitMs + (p.last - p.started)),
      e2e_p50_ms: quantile(e2e, 0.5),
      e2e_p99_ms: quantile(e2e, 0.99),
      client_cpu_us_per_job: {
        submit: (submitCpu.user + submitCpu.system) / JOBS,
        process: (processCpu.user + processCpu.system) / JOBS,
      },
      redis: { submit: submitWork, process: processWork },
      version: VERSION,
    };
    const label = `${mode === 'bulk' ? `addBulk(${BULK_CHUNK})` : 'add'}${removeOnComplete ? ' removeOnComplete' : ''}`;
    console.log(
      `bullmq    redis   jobs=${JOBS} concurrency=${CONCURRENCY} batch=1   ` +
        `submit=${r.submit_per_s.toFixed(0).padStart(8)} jobs/s  process=${r.process_per_s.toFixed(0).padStart(8)} jobs/s  ` +
        `whole=${r.whole_per_s.toFixed(0).padStart(8)} jobs/s  e2e p50=${r.e2e_p50_ms.toFixed(1)} ms p99=${r.e2e_p99_ms.toFixed(1)} ms  [${label}]`,
    );
    console.log(
      `  client CPU: ${r.client_cpu_us_per_job.submit.toFixed(1)} µs per job submitting, ` +
        `${r.client_cpu_us_per_job.process.toFixed(1)} µs per job processing`,
    );
    console.log(`  redis during submit:  ${describe(submitWork)}`);
    console.log(`  redis during process: ${describe(processWork)}`);
    console.log(`JSON ${JSON.stringify(r)}`);
  } finally {
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

for (const mode of MODES) {
  if (mode !== 'add' && mode !== 'bulk') throw new Error(`unknown mode ${mode} (add, bulk)`);
  for (const remove of REMOVES) await run(mode, remove);
}
await stats.quit();
