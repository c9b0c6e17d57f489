//! The OpenAPI 3 document, generated from the handlers and wire types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto::{
    CreateParticipantRequest, CreateParticipantResponse, CreateSessionRequest,
    DeviceApiVersionName, ErrorBody, MessageBody, ParticipantBody, ParticipantSubscriptionBody,
    PublishPermissionName, SessionBody, SubscriptionsBody,
};
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Patchbay control API",
        description = "Self-hosted, wire-compatible replacement for the Bandwidth WebRTC v1 API. \
                       Point a Bandwidth server SDK's custom base URL at `http://HOST:PORT/v1`."
    ),
    paths(
        routes::create_participant,
        routes::get_participant,
        routes::delete_participant,
        routes::create_session,
        routes::get_session,
        routes::delete_session,
        routes::list_session_participants,
        routes::add_participant_to_session,
        routes::remove_participant_from_session,
        routes::get_subscriptions,
        routes::update_subscriptions,
        crate::dialogs::create_dialog,
        crate::calls::hold,
        crate::calls::resume,
        crate::calls::transfer,
        crate::dialogs::get_dialog,
        crate::dialogs::update_dialog,
        crate::dialogs::delete_dialog,
        crate::recordings::create_recording,
        crate::recordings::list_recordings,
        crate::recordings::get_recording,
        crate::recordings::stop_recording,
        crate::recordings::get_recording_file,
        routes::health,
        routes::ready,
        routes::metrics,
        crate::cluster::cluster,
        crate::cluster::proof,
        crate::console::list_sessions,
        crate::console::session_media,
        crate::console::list_dialogs,
        crate::console::webhook_log,
        crate::console::ops,
        crate::console::events::events,
    ),
    components(schemas(
        CreateParticipantRequest,
        CreateParticipantResponse,
        CreateSessionRequest,
        ParticipantBody,
        SessionBody,
        SubscriptionsBody,
        ParticipantSubscriptionBody,
        PublishPermissionName,
        DeviceApiVersionName,
        ErrorBody,
        MessageBody,
        crate::dialogs::DialogBody,
        crate::dialogs::SipDialogData,
        crate::dialogs::DialogEventData,
        crate::calls::TransferRequest,
        crate::calls::TransferResult,
        crate::recordings::CreateRecordingRequest,
        crate::recordings::RecordingBody,
        crate::recordings::RecordingFileBody,
        crate::recordings::RecordingSegmentBody,
    )),
    modifiers(&BasicAuth)
)]
pub struct ApiDoc;

struct BasicAuth;

impl Modify for BasicAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "Basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}
