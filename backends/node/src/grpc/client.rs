//! A client of `meshkit.control.v1.Control` and of the node's `grpc.health.v1.Health`, over any
//! tonic transport (what tonic's generated clients would be).

use tonic::client::GrpcService;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::{Body, Bytes, GrpcMethod, StdError};
use tonic::{IntoRequest, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::health::{HealthCheckRequest, HealthCheckResponse};
use super::proto::{
    DrainRequest, DrainResponse, GetLeadersRequest, GetLeadersResponse, LeadershipEvent,
    ListClustersRequest, ListClustersResponse, ListPeersRequest, ListPeersResponse,
    ListShardsRequest, ListShardsResponse, ListVersionsRequest, ListVersionsResponse,
    ResumeRequest, ResumeResponse, TransferLeaseRequest, TransferLeaseResponse,
    WatchLeadershipRequest,
};
use super::{SERVICE, path};

/// A `meshkit.control.v1.Control` client over `T` (e.g. a `tonic::transport::Channel`, with an
/// interceptor that adds `authorization: Bearer ..`).
#[derive(Clone, Debug)]
pub struct ControlClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> ControlClient<T>
where
    T: GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A client sending its calls through `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(transport),
        }
    }

    async fn prepare<M>(
        &mut self,
        request: impl IntoRequest<M>,
        path: &'static str,
    ) -> Result<(Request<M>, PathAndQuery), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("transport not ready: {}", e.into())))?;
        let mut request = request.into_request();
        // Every path is `/{service}/{method}`.
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((SERVICE, path));
        request
            .extensions_mut()
            .insert(GrpcMethod::new(service, method));
        Ok((request, PathAndQuery::from_static(path)))
    }

    /// `ListPeers`.
    pub async fn list_peers(
        &mut self,
        request: impl IntoRequest<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        let (request, path) = self.prepare(request, path::LIST_PEERS).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `GetLeaders`.
    pub async fn get_leaders(
        &mut self,
        request: impl IntoRequest<GetLeadersRequest>,
    ) -> Result<Response<GetLeadersResponse>, Status> {
        let (request, path) = self.prepare(request, path::GET_LEADERS).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `TransferLease`.
    pub async fn transfer_lease(
        &mut self,
        request: impl IntoRequest<TransferLeaseRequest>,
    ) -> Result<Response<TransferLeaseResponse>, Status> {
        let (request, path) = self.prepare(request, path::TRANSFER_LEASE).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `Drain`.
    pub async fn drain(
        &mut self,
        request: impl IntoRequest<DrainRequest>,
    ) -> Result<Response<DrainResponse>, Status> {
        let (request, path) = self.prepare(request, path::DRAIN).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `Resume`.
    pub async fn resume(
        &mut self,
        request: impl IntoRequest<ResumeRequest>,
    ) -> Result<Response<ResumeResponse>, Status> {
        let (request, path) = self.prepare(request, path::RESUME).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `WatchLeadership`: a stream of feed entries, ending with an error status.
    pub async fn watch_leadership(
        &mut self,
        request: impl IntoRequest<WatchLeadershipRequest>,
    ) -> Result<Response<Streaming<LeadershipEvent>>, Status> {
        let (request, path) = self.prepare(request, path::WATCH_LEADERSHIP).await?;
        self.inner
            .server_streaming(request, path, ProstCodec::new())
            .await
    }

    /// `ListShards`.
    pub async fn list_shards(
        &mut self,
        request: impl IntoRequest<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        let (request, path) = self.prepare(request, path::LIST_SHARDS).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `ListClusters`.
    pub async fn list_clusters(
        &mut self,
        request: impl IntoRequest<ListClustersRequest>,
    ) -> Result<Response<ListClustersResponse>, Status> {
        let (request, path) = self.prepare(request, path::LIST_CLUSTERS).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `ListVersions`.
    pub async fn list_versions(
        &mut self,
        request: impl IntoRequest<ListVersionsRequest>,
    ) -> Result<Response<ListVersionsResponse>, Status> {
        let (request, path) = self.prepare(request, path::LIST_VERSIONS).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `grpc.health.v1.Health/Check`: the node's readiness (needs no credentials).
    pub async fn health_check(
        &mut self,
        request: impl IntoRequest<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let (request, path) = self.prepare(request, path::HEALTH_CHECK).await?;
        self.inner.unary(request, path, ProstCodec::new()).await
    }

    /// `grpc.health.v1.Health/Watch`: the node's readiness now, then each change.
    pub async fn health_watch(
        &mut self,
        request: impl IntoRequest<HealthCheckRequest>,
    ) -> Result<Response<Streaming<HealthCheckResponse>>, Status> {
        let (request, path) = self.prepare(request, path::HEALTH_WATCH).await?;
        self.inner
            .server_streaming(request, path, ProstCodec::new())
            .await
    }

    /// `WatchShards`: [`Self::watch_leadership`] narrowed to `shard/...` scopes.
    pub async fn watch_shards(
        &mut self,
        request: impl IntoRequest<WatchLeadershipRequest>,
    ) -> Result<Response<Streaming<LeadershipEvent>>, Status> {
        let (request, path) = self.prepare(request, path::WATCH_SHARDS).await?;
        self.inner
            .server_streaming(request, path, ProstCodec::new())
            .await
    }
}
