// Compile-time checks of the generated client: compiled with each version's client, never
// run. Each `@ts-expect-error` line must be a type error (tsc fails on one that is not), and
// each `Same<...>` must hold, so a change of the contract (a parameter renamed, a type
// widened, a method added or dropped) that the client does not follow fails the compilation.
import {
  API_VERSION,
  type AgentApi, type AgentClient, type ErrorName, type MethodName, type Notifications,
  type SystemLoadCurrentResult, type SystemLoadHistoricalParams, type MountsListResult,
} from './client.js';

// true when A and B are the same type (not merely assignable one way).
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type Version = typeof API_VERSION;

// What the API versions promise (issue 8; api-versions/<version>.lua): 2026-12-01 has gpuPctUsed null without
// a GPU and system_load.historical {since, until}; 2027-01-15 and later always give an array,
// take {from, to}, and have mounts.get.
type Gpu<V> = V extends '2026-12-01' ? number[] | null : number[];
type HistoricalRange<V> = V extends '2026-12-01' ? 'since' | 'until' : 'from' | 'to';
type HasMountsGet<V> = V extends '2026-12-01' ? false : true;

export const gpuShape: Same<SystemLoadCurrentResult['gpuPctUsed'], Gpu<Version>> = true;
export const notifyGpuShape: Same<Notifications['notify.system_load']['gpuPctUsed'], Gpu<Version>> = true;
export const rangeParams: Same<Exclude<keyof SystemLoadHistoricalParams, 'limit'>, HistoricalRange<Version>> = true;
export const mountsGet: Same<'get' extends keyof AgentApi['mounts'] ? true : false, HasMountsGet<Version>> = true;
export const loadFields: Same<keyof SystemLoadCurrentResult, 'cpuPctUsed' | 'epoch' | 'gpuPctUsed' | 'memPctUsed' | 'rootfsPctUsed'> = true;
export const mountKinds: Same<MountsListResult[number]['kind'], 'volume' | 'share' | 'other'> = true;
export const errorNames: Same<Extract<ErrorName, 'InvalidParams' | 'NotAuthenticated' | 'Unsupported'>, 'InvalidParams' | 'NotAuthenticated' | 'Unsupported'> = true;

export async function wrongUses(c: AgentClient): Promise<void> {
  const load = await c.system_load.current();
  // @ts-expect-error: gpuPctUsed is a list of percentages (or null), never a string.
  const gpuText: string = load.gpuPctUsed;
  // @ts-expect-error: percentages are numbers.
  const cpu: string = load.cpuPctUsed;
  // @ts-expect-error: system_load.historical has no parameter sample_count.
  await c.system_load.historical({ sample_count: 1 });
  // @ts-expect-error: limit is an integer, not a string.
  await c.system_load.historical({ limit: '10' });
  // @ts-expect-error: system_load.current takes no parameters.
  await c.system_load.current({ limit: 1 });
  // @ts-expect-error: authenticate.login needs the password.
  await c.authenticate.login({ username: 'exouser' });
  // @ts-expect-error: mounts.list's kind is volume, share or other.
  await c.mounts.list({ kind: 'disk' });
  // @ts-expect-error: there is no method system_load.average.
  await c.system_load.average();
  // @ts-expect-error: Teapot is no error of the agent's.
  const teapot: ErrorName = 'Teapot';
  // @ts-expect-error: nor is system_load.average a method name.
  const average: MethodName = 'system_load.average';
  void [gpuText, cpu, teapot, average];
}
