//! Real traffic for the simulated cluster: every RUNNING task serves HTTP/1.1 on its own
//! loopback port (the demo app: it answers with its container id), behind a round-robin load
//! balancer on one port.
//!
//! A task is a single CPU serving one request at a time, first come first served: each request
//! takes a service time of `0.5·D + Exp(0.5·D)` seconds (mean `D = 1/task_rps`), waits for the
//! requests before it, and is refused with 503 when it would wait longer than `max_queue_wait`.
//! So latency grows for real as a task saturates, and a task's CPU (published each minute) is
//! the share of real time it spent serving. The load balancer counts every request's latency and
//! failure for the minute; a stopped task's port closes (its in-flight requests fail with 502).
//!
//! With a [`VisitStore`], the load balancer gives every request an id (`x-visit-id`, as an ALB
//! adds a trace id) and each task saves the visit before it answers ([`super::visits`]); the
//! load balancer keeps the ids it got a 200 for, to audit the store against.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cluster::{next_u64, TaskStatus};
use super::load::TaskMeter;
use super::visits::{Saved, VisitStore};
use super::Sim;

/// The header carrying the load balancer's id of a request.
const VISIT_ID: &str = "x-visit-id";

/// One task's CPU: a first-come-first-served queue.
struct TaskCpu {
    container_id: String,
    task_arn: String,
    mean: f64,
    max_wait: Duration,
    state: Mutex<(Instant, u64)>,
    meter: Arc<TaskMeter>,
    visits: Option<Arc<VisitStore>>,
}

impl TaskCpu {
    /// Takes the request's turn: when it completes, or `None` when refused.
    fn admit(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (free, rng) = &mut *g;
        let start = (*free).max(now);
        if start - now > self.max_wait {
            self.meter.served(1.0, 0.0);
            return None;
        }
        let u = (next_u64(rng) >> 11) as f64 / (1u64 << 53) as f64;
        let service = self.mean * (0.5 - 0.5 * (1.0 - u).max(1e-12).ln());
        let done = start + Duration::from_secs_f64(service);
        *free = done;
        self.meter.served(1.0, service);
        Some(done)
    }
}

/// The answer to a served request: the visit saved first, when there is a store.
fn served(cpu: &TaskCpu, visit: Option<u64>) -> (StatusCode, String) {
    let answer = |v: &str| {
        format!(
            "{{\"container\":\"{}\",\"task\":\"{}\"{v}}}\n",
            cpu.container_id, cpu.task_arn
        )
    };
    let (Some(store), Some(id)) = (&cpu.visits, visit) else {
        return match cpu.visits {
            Some(_) => (StatusCode::BAD_REQUEST, format!("no {VISIT_ID} header\n")),
            None => (StatusCode::OK, answer("")),
        };
    };
    match store.save(id, &cpu.container_id, &cpu.task_arn) {
        Saved::Ok => (StatusCode::OK, answer(&format!(",\"visit\":{id}"))),
        Saved::Duplicate => (StatusCode::CONFLICT, format!("visit {id} was saved before\n")),
        Saved::Failed(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn task_answer(
    cpu: Arc<TaskCpu>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let visit = req
        .headers()
        .get(VISIT_ID)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (status, body) = match cpu.admit() {
        Some(done) => {
            tokio::time::sleep_until(done).await;
            served(&cpu, visit)
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n".to_string()),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// Serves HTTP/1.1 on `listener` until aborted; aborting it closes its connections too.
async fn serve<F, Fut>(listener: TcpListener, answer: F)
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        conns.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(answer))
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}

/// A target of the load balancer, with its idle connections.
struct Backend {
    task_id: String,
    addr: SocketAddr,
    idle: Mutex<Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>>,
}

impl Backend {
    async fn send(&self, path: &str, visit: u64) -> Result<(StatusCode, Bytes), String> {
        let mut sender = loop {
            let candidate = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match candidate {
                Some(s) if s.is_ready() => break s,
                Some(_) => continue,
                None => {
                    let stream = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
                    let _ = stream.set_nodelay(true);
                    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(conn);
                    break s;
                }
            }
        };
        let req = Request::get(path)
            .header("host", self.addr.to_string())
            .header(VISIT_ID, visit)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(sender);
        Ok((status, body))
    }
}

struct Lb {
    sim: Arc<Sim>,
    targets: RwLock<Vec<Arc<Backend>>>,
    next: AtomicUsize,
    /// The last visit id given, and the ids a task answered 200 for.
    visit: AtomicU64,
    answered: Mutex<Vec<u64>>,
}

async fn lb_answer(
    lb: Arc<Lb>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let visit = lb.visit.fetch_add(1, Ordering::Relaxed) + 1;
    let target = {
        let t = lb.targets.read().unwrap_or_else(|p| p.into_inner());
        (!t.is_empty()).then(|| t[lb.next.fetch_add(1, Ordering::Relaxed) % t.len()].clone())
    };
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let (status, body) = match target {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"no healthy target\n"),
        ),
        Some(b) => match b.send(&path, visit).await {
            Ok(answer) => answer,
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                Bytes::from(format!("target {} failed: {e}\n", b.task_id)),
            ),
        },
    };
    {
        let mut g = lb.sim.lock();
        if status.is_success() {
            g.lb.answered(started.elapsed().as_secs_f64(), 1);
            lb.answered.lock().unwrap_or_else(|p| p.into_inner()).push(visit);
        } else {
            g.lb.failed(1.0);
        }
    }
    Ok(Response::builder()
        .status(status)
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// The tasks' servers and the load balancer.
pub struct Fleet {
    sim: Arc<Sim>,
    lb: Arc<Lb>,
    servers: HashMap<String, (SocketAddr, JoinHandle<()>)>,
    lb_task: JoinHandle<()>,
    pub lb_addr: SocketAddr,
    seed: u64,
    visits: Option<Arc<VisitStore>>,
}

impl Fleet {
    /// Binds the load balancer on `127.0.0.1:port` (0: any free port); its tasks save each
    /// visit in `visits`, if given.
    pub async fn start(sim: Arc<Sim>, port: u16, visits: Option<Arc<VisitStore>>) -> std::io::Result<Fleet> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let lb_addr = listener.local_addr()?;
        let lb = Arc::new(Lb {
            sim: sim.clone(),
            targets: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            visit: AtomicU64::new(0),
            answered: Mutex::new(Vec::new()),
        });
        let l = lb.clone();
        let lb_task = tokio::spawn(serve(listener, move |req| lb_answer(l.clone(), req)));
        let seed = sim.spec.seed;
        let mut fleet = Fleet {
            sim,
            lb,
            servers: HashMap::new(),
            lb_task,
            lb_addr,
            seed,
            visits,
        };
        fleet.reconcile().await?;
        Ok(fleet)
    }

    /// Starts a server for each task that turned RUNNING, closes those of tasks that stopped,
    /// and gives the load balancer the RUNNING tasks as its targets.
    pub async fn reconcile(&mut self) -> std::io::Result<()> {
        let running: Vec<(String, String, String, Arc<TaskMeter>)> = {
            let g = self.sim.lock();
            g.cluster
                .tasks
                .iter()
                .filter(|t| t.status == TaskStatus::Running)
                .map(|t| {
                    (
                        t.id.clone(),
                        t.arn.clone(),
                        t.container_id.clone(),
                        t.meter.clone(),
                    )
                })
                .collect()
        };
        let before = self.servers.len();
        self.servers.retain(|id, (_, handle)| {
            let keep = running.iter().any(|(r, ..)| r == id);
            if !keep {
                handle.abort();
            }
            keep
        });
        let mut changed = before != self.servers.len();
        for (id, arn, container_id, meter) in running {
            if self.servers.contains_key(&id) {
                continue;
            }
            let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
            let addr = listener.local_addr()?;
            self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let cpu = Arc::new(TaskCpu {
                container_id,
                task_arn: arn,
                mean: 1.0 / self.sim.spec.task_rps,
                max_wait: self.sim.spec.max_queue_wait,
                state: Mutex::new((Instant::now(), self.seed | 1)),
                meter,
                visits: self.visits.clone(),
            });
            self.servers.insert(
                id,
                (
                    addr,
                    tokio::spawn(serve(listener, move |req| task_answer(cpu.clone(), req))),
                ),
            );
            changed = true;
        }
        if changed {
            let old: HashMap<String, Arc<Backend>> = self
                .lb
                .targets
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|b| (b.task_id.clone(), b.clone()))
                .collect();
            let mut targets: Vec<Arc<Backend>> = self
                .servers
                .iter()
                .map(|(id, (addr, _))| {
                    old.get(id).cloned().unwrap_or_else(|| {
                        Arc::new(Backend {
                            task_id: id.clone(),
                            addr: *addr,
                            idle: Mutex::new(Vec::new()),
                        })
                    })
                })
                .collect();
            targets.sort_by(|a, b| a.task_id.cmp(&b.task_id));
            *self.lb.targets.write().unwrap_or_else(|p| p.into_inner()) = targets;
        }
        Ok(())
    }

    /// The ports of the RUNNING tasks (task id → address).
    pub fn task_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.servers.iter().map(|(id, (a, _))| (id.clone(), *a)).collect()
    }

    /// The visit ids the tasks answered 200 for, in the order answered.
    pub fn answered(&self) -> Vec<u64> {
        self.lb.answered.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes every port.
    pub fn stop(self) {
        self.lb_task.abort();
        for (_, (_, h)) in self.servers {
            h.abort();
        }
    }
}
